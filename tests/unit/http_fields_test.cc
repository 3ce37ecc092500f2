// SPDX-License-Identifier: MIT
// Field lines and lists (RFC 9110 §5.3, §5.6.1), the hop-by-hop set a
// gateway drops (§7.6.1), and RFC 8941 Dictionaries.
#include <gtest/gtest.h>

#include "common/http/fields.hpp"
#include "common/http/structured.hpp"

namespace cdn::http {
namespace {

using H = std::vector<Header>;

std::vector<std::string> members(std::string_view v) {
  std::vector<std::string> out;
  for_each_member(v, [&](std::string_view m) { out.emplace_back(m); });
  return out;
}

TEST(Fields, ListMembers_RFC9110_5_6_1) {
  EXPECT_EQ(members("a, b,c"), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(members(" , a ,, ,b , "), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(members("x=\"1, 2\", y"), (std::vector<std::string>{"x=\"1, 2\"", "y"}));
  EXPECT_EQ(members("x=\"a\\\", b\", y"), (std::vector<std::string>{"x=\"a\\\", b\"", "y"}));
  EXPECT_EQ(members("x=\"unterminated, y"), (std::vector<std::string>{"x=\"unterminated, y"}));
  EXPECT_TRUE(members("").empty());
}

TEST(Fields, SeveralLinesCombine_RFC9110_5_3) {
  const H h = {{"Vary", "a"}, {"X", "1"}, {"vary", "b, c"}};
  EXPECT_EQ(combined(h, "VARY"), "a, b, c");
  EXPECT_EQ(list_members(h, "Vary"), (std::vector<std::string_view>{"a", "b", "c"}));
  EXPECT_EQ(field_lines(h, "vary").size(), 2U);
  EXPECT_TRUE(has_field(h, "x"));
  EXPECT_FALSE(has_field(h, "y"));
  EXPECT_EQ(combined(h, "y"), "");
}

TEST(Fields, HopByHop_RFC9110_7_6_1) {
  const H h = {{"Connection", "close, X-Private"},
               {"connection", "Upgrade"},
               {"X-Private", "1"},
               {"Keep-Alive", "timeout=5"},
               {"TE", "trailers"},
               {"Transfer-Encoding", "chunked"},
               {"Upgrade", "h2c"},
               {"Proxy-Connection", "keep-alive"},
               {"Proxy-Authorization", "Basic x"},
               {"Proxy-Authenticate", "Basic"},
               {"Cache-Control", "max-age=1"},
               {"Set-Cookie", "a=b"},
               {"Close", "named by Connection: close, so it goes too"}};
  const auto opts = connection_options(h);
  EXPECT_EQ(opts, (std::vector<std::string>{"close", "x-private", "upgrade"}));
  const auto kept = end_to_end(h);
  ASSERT_EQ(kept.size(), 2U);
  EXPECT_EQ(kept[0].name, "Cache-Control");
  EXPECT_EQ(kept[1].name, "Set-Cookie");
  EXPECT_FALSE(is_hop_by_hop("Trailer", {}));
  EXPECT_FALSE(is_hop_by_hop("Content-Length", {}));
  EXPECT_TRUE(is_hop_by_hop("PROXY-anything", {}));
}

TEST(StructuredFields, DictionaryTypes_RFC8941_4_2_2) {
  std::vector<std::pair<std::string, sf::Item::Type>> seen;
  int64_t integer = 0;
  const bool ok =
      sf::parse_dictionary("a=1, b=-20, c=1.5, d=\"s\", e=tok, f=:AQID:, g, h=?0, i=(1 2);p=x  ",
                           [&](std::string_view k, sf::Item v) {
                             if (k == "b") integer = v.integer;
                             if (k == "h") {
                               EXPECT_FALSE(v.boolean);
                             } else if (k == "g") {
                               EXPECT_TRUE(v.boolean);
                             } else if (k == "f") {
                               EXPECT_EQ(v.bytes, (std::vector<unsigned char>{1, 2, 3}));
                             } else if (k == "d") {
                               EXPECT_EQ(v.text, "s");
                             }
                             seen.emplace_back(std::string(k), v.type);
                           });
  ASSERT_TRUE(ok);
  EXPECT_EQ(integer, -20);
  using T = sf::Item::Type;
  const std::vector<T> types = {T::Integer, T::Integer, T::Decimal, T::String,   T::Token,
                                T::Bytes,   T::Boolean, T::Boolean, T::InnerList};
  ASSERT_EQ(seen.size(), types.size());
  for (size_t i = 0; i < types.size(); ++i) EXPECT_EQ(seen[i].second, types[i]) << seen[i].first;
  for (const char* bad : {"A=1", "a=1,", "a=&", "a=1 b=2", "a=\"x", "a=1234567890123456"}) {
    EXPECT_FALSE(sf::parse_dictionary(bad, [](std::string_view, sf::Item) {})) << bad;
  }
}

}  // namespace
}  // namespace cdn::http
