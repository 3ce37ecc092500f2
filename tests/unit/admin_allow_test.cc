// SPDX-License-Identifier: MIT
#include "common/admin/allow.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cstring>
#include <stdexcept>

namespace cdn::admin {
namespace {

sockaddr_storage v4(const char* ip) {
  sockaddr_storage ss{};
  auto* in = reinterpret_cast<sockaddr_in*>(&ss);
  in->sin_family = AF_INET;
  EXPECT_EQ(inet_pton(AF_INET, ip, &in->sin_addr), 1) << ip;
  return ss;
}

sockaddr_storage v6(const char* ip) {
  sockaddr_storage ss{};
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
  in6->sin6_family = AF_INET6;
  EXPECT_EQ(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1) << ip;
  return ss;
}

bool allows(const AllowList& l, const sockaddr_storage& ss) {
  return l.allows(reinterpret_cast<const sockaddr*>(&ss));
}

TEST(Cidr, Parses) {
  auto c = parse_cidr("10.0.0.0/8");
  ASSERT_TRUE(c);
  EXPECT_FALSE(c->v6);
  EXPECT_EQ(c->prefix, 8u);
  EXPECT_EQ(to_string(*c), "10.0.0.0/8");
  EXPECT_EQ(to_string(*parse_cidr("::1")), "::1/128");
  EXPECT_EQ(to_string(*parse_cidr("192.0.2.1")), "192.0.2.1/32");
  EXPECT_EQ(to_string(*parse_cidr("2001:db8::/32")), "2001:db8::/32");
  EXPECT_EQ(to_string(*parse_cidr("0.0.0.0/0")), "0.0.0.0/0");
}

TEST(Cidr, Refuses) {
  for (const char* bad :
       {"", "/8", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0.1/8", "10.0.0.0/8x", "10.0.0.0/-1",
        "10.0.0", "example.com", "1.2.3.4/0008", "2001:db8::1/32", "10.0.0.0/8/8"}) {
    EXPECT_FALSE(parse_cidr(bad)) << bad;
  }
}

TEST(AllowList, MatchesByPrefix) {
  const auto l = AllowList::parse("127.0.0.1/32, 10.1.0.0/16 2001:db8::/32");
  EXPECT_TRUE(allows(l, v4("127.0.0.1")));
  EXPECT_FALSE(allows(l, v4("127.0.0.2")));
  EXPECT_TRUE(allows(l, v4("10.1.255.3")));
  EXPECT_FALSE(allows(l, v4("10.2.0.1")));
  EXPECT_TRUE(allows(l, v6("2001:db8:ffff::1")));
  EXPECT_FALSE(allows(l, v6("2001:db9::1")));
  EXPECT_FALSE(allows(l, v6("::1")));
}

TEST(AllowList, OddPrefixLengths) {
  const auto l = AllowList::parse("192.0.2.128/25 fe80::/10");
  EXPECT_TRUE(allows(l, v4("192.0.2.200")));
  EXPECT_FALSE(allows(l, v4("192.0.2.127")));
  EXPECT_TRUE(allows(l, v6("febf::1")));
  EXPECT_FALSE(allows(l, v6("fec0::1")));
}

TEST(AllowList, MappedIpv6IsMatchedAsIpv4) {
  const auto l = AllowList::loopback();
  EXPECT_TRUE(allows(l, v6("::ffff:127.0.0.5")));
  EXPECT_TRUE(allows(l, v6("::1")));
  EXPECT_TRUE(allows(l, v4("127.255.0.1")));
  EXPECT_FALSE(allows(l, v6("::ffff:128.0.0.1")));
  EXPECT_FALSE(allows(l, v6("::2")));
  // An IPv6 block never matches through a mapped address by accident.
  EXPECT_FALSE(allows(AllowList::parse("::/96"), v6("::ffff:127.0.0.1")));
}

TEST(AllowList, EmptyAllowsNoOneAndBadEntriesAreNamed) {
  const auto empty = AllowList::parse(" , ");
  EXPECT_TRUE(empty.blocks().empty());
  EXPECT_FALSE(allows(empty, v4("127.0.0.1")));
  EXPECT_FALSE(AllowList::loopback().allows(nullptr));
  try {
    AllowList::parse("127.0.0.1, 10.0.0.0/99");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'10.0.0.0/99'"), std::string::npos) << e.what();
  }
  sockaddr_storage unix_addr{};
  unix_addr.ss_family = AF_UNIX;
  EXPECT_FALSE(allows(AllowList::parse("0.0.0.0/0 ::/0"), unix_addr));
  EXPECT_EQ(AllowList::loopback().str(), "127.0.0.0/8 ::1/128");
}

TEST(Token, ComparesWholeTokens) {
  EXPECT_TRUE(token_equals("s3cret-token", "s3cret-token"));
  EXPECT_FALSE(token_equals("s3cret-tokem", "s3cret-token"));
  EXPECT_FALSE(token_equals("s3cret", "s3cret-token"));
  EXPECT_FALSE(token_equals("s3cret-token-and-more", "s3cret-token"));
  EXPECT_FALSE(token_equals("", "s3cret-token"));
  // No token configured: nothing matches, not even an empty one.
  EXPECT_FALSE(token_equals("", ""));
  EXPECT_FALSE(token_equals("x", ""));
}

TEST(Token, FromFileText) {
  EXPECT_EQ(token_from_text("  abc123 \r\nignored\n"), "abc123");
  EXPECT_EQ(token_from_text("abc"), "abc");
  EXPECT_EQ(token_from_text("\n"), "");
  EXPECT_EQ(token_from_text(""), "");
}

}  // namespace
}  // namespace cdn::admin
