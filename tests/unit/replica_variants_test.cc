// SPDX-License-Identifier: MIT
// Variants of one URL (RFC 9111 §4.1): naming, selection by the request's
// normalised fields, the least-recently-used bound per URL. Pure: times are
// the stored responses' own (a fake clock: plain numbers).
#include <gtest/gtest.h>

#include "common/http/serialize.hpp"
#include "daemons/replicad/variants.hpp"

namespace cdn::replica::variants {
namespace {

using H = std::vector<http::Header>;

constexpr int64_t kT0 = 1'700'000'000;

// A response with these fields, stored for `request` at `at`.
cache::Stored stored_for(H response, const H& request, int64_t at) {
  cache::Stored s;
  s.headers = std::move(response);
  s.response_time = at;
  s.request_time = at;
  s.variant = cache::variant_key(s.headers, request).value_or("");
  return s;
}

TEST(VariantId, KeyAloneWithoutVaryElseKeyNulVariant) {
  EXPECT_EQ(id_of("/a?x=1", ""), "/a?x=1");
  const std::string id = id_of("/a", "accept-encoding: gzip\n");
  EXPECT_EQ(id, std::string("/a\0accept-encoding: gzip\n", 25));
  EXPECT_EQ(key_of(id), "/a");
  EXPECT_EQ(key_of("/a?x=1"), "/a?x=1");
}

TEST(VariantSelect, EachRequestGetsItsOwnEncoding) {
  const H vary{{"Vary", "Accept-Encoding"}};
  const auto gz = stored_for(vary, {{"Accept-Encoding", "gzip"}}, kT0);
  const auto br = stored_for(vary, {{"Accept-Encoding", "br"}}, kT0);
  const auto none = stored_for(vary, {}, kT0);
  const std::vector<const cache::Stored*> all{&gz, &br, &none};
  EXPECT_EQ(select(all, H{{"Accept-Encoding", "gzip"}}), 0U);
  EXPECT_EQ(select(all, H{{"Accept-Encoding", "br"}}), 1U);
  // A request without the field is not one with an empty value.
  EXPECT_EQ(select(all, H{}), 2U);
  EXPECT_EQ(select(all, H{{"Accept-Encoding", ""}}), std::nullopt);
  EXPECT_EQ(select(all, H{{"Accept-Encoding", "zstd"}}), std::nullopt);
}

TEST(VariantSelect, NormalisedTokensSortedWhitespaceFolded) {
  const H vary{{"Vary", "accept-encoding, Accept-Language"}};
  const auto s =
      stored_for(vary, {{"Accept-Encoding", "gzip, br"}, {"Accept-Language", "en,  fr"}}, kT0);
  const std::vector<const cache::Stored*> all{&s};
  // Accept-Encoding members in any order, any case, any spacing, split
  // over lines; other fields with their whitespace folded.
  EXPECT_EQ(select(all, H{{"Accept-Encoding", "BR ,gzip"}, {"Accept-Language", "en, fr"}}), 0U);
  EXPECT_EQ(select(all, H{{"accept-encoding", "br"},
                          {"Accept-Encoding", "gzip"},
                          {"Accept-Language", "en ,fr"}}),
            0U);
  // Language ranges in any order and case too.
  EXPECT_EQ(select(all, H{{"Accept-Encoding", "gzip, br"}, {"Accept-Language", "FR, en"}}), 0U);
  EXPECT_EQ(select(all, H{{"Accept-Encoding", "gzip, br"}, {"Accept-Language", "fr"}}),
            std::nullopt);
  // Other fields' members keep their order: not the same.
  const auto foo = stored_for({{"Vary", "Foo"}}, {{"Foo", "a, b"}}, kT0);
  const std::vector<const cache::Stored*> foos{&foo};
  EXPECT_EQ(select(foos, H{{"Foo", " a ,b"}}), 0U);
  EXPECT_EQ(select(foos, H{{"Foo", "b, a"}}), std::nullopt);
}

TEST(VariantSelect, VaryStarNeverMatches) {
  cache::Stored star;
  star.headers = {{"Vary", "*"}};
  star.response_time = kT0;
  const std::vector<const cache::Stored*> all{&star};
  EXPECT_EQ(select(all, H{}), std::nullopt);
  EXPECT_EQ(select(all, H{{"Accept-Encoding", "gzip"}}), std::nullopt);
}

TEST(VariantSelect, MostRecentOfSeveralMatching) {
  // Two responses that both match (one without Vary, one that varies on a
  // field the request lacks): the later Date wins, whatever the order.
  const auto plain = stored_for({{"Date", http::http_date(kT0 + 5)}}, {}, kT0);
  const auto varied =
      stored_for({{"Vary", "Accept-Language"}, {"Date", http::http_date(kT0 + 9)}}, {}, kT0);
  EXPECT_EQ(select(std::vector<const cache::Stored*>{&plain, &varied}, H{}), 1U);
  EXPECT_EQ(select(std::vector<const cache::Stored*>{&varied, &plain}, H{}), 0U);
  // Without Date: the time each came; a tie goes to the first (most recently used).
  const auto a = stored_for({}, {}, kT0 + 1);
  const auto b = stored_for({{"Vary", "X"}}, {}, kT0 + 1);
  EXPECT_EQ(select(std::vector<const cache::Stored*>{&a, &b}, H{}), 0U);
  EXPECT_EQ(select(std::vector<const cache::Stored*>{&b, &a}, H{}), 0U);
  EXPECT_EQ(select(std::vector<const cache::Stored*>{}, H{}), std::nullopt);
}

TEST(VariantLru, BoundDropsTheLeastRecentlyUsedOfThatUrl) {
  Lru lru(3);
  EXPECT_TRUE(lru.add("/a", "1").empty());
  EXPECT_TRUE(lru.add("/a", "2").empty());
  EXPECT_TRUE(lru.add("/a", "3").empty());
  EXPECT_TRUE(lru.add("/b", "1").empty());  // another URL has a bound of its own
  lru.touch("/a", "1");                     // now 1, 3, 2
  EXPECT_EQ(lru.add("/a", "4"), std::vector<std::string>{"2"});
  const auto of = lru.of("/a");
  EXPECT_EQ(std::vector<std::string>(of.begin(), of.end()),
            (std::vector<std::string>{"4", "1", "3"}));
  // Stored again: moves to the front, nothing dropped.
  EXPECT_TRUE(lru.add("/a", "3").empty());
  EXPECT_EQ(lru.of("/a").front(), "3");
  EXPECT_EQ(lru.of("/b").size(), 1U);
  EXPECT_EQ(lru.keys(), 2U);
}

TEST(VariantLru, EraseAndShrink) {
  Lru lru(8);
  for (const char* v : {"a", "b", "c", "d"}) lru.add("/x", v);
  lru.erase("/x", "b");
  lru.erase("/x", "nope");
  lru.touch("/nope", "a");
  EXPECT_EQ(lru.of("/x").size(), 3U);
  lru.set_max(1);
  // A lower bound applies at the URL's next store: the two oldest go.
  EXPECT_EQ(lru.add("/x", "e"), (std::vector<std::string>{"a", "c", "d"}));
  for (const char* v : {"e"}) lru.erase("/x", v);
  EXPECT_TRUE(lru.of("/x").empty());
  EXPECT_EQ(lru.keys(), 0U);
  lru.set_max(0);  // at least one
  EXPECT_EQ(lru.max(), 1U);
}

}  // namespace
}  // namespace cdn::replica::variants
