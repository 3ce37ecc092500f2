// SPDX-License-Identifier: MIT
#include "common/text/text.hpp"

#include <gtest/gtest.h>

namespace cdn::text {
namespace {

TEST(Text, IequalsFoldsOnlyAsciiLetters) {
  EXPECT_TRUE(iequals("Content-Length", "content-length"));
  EXPECT_TRUE(iequals("", ""));
  EXPECT_FALSE(iequals("Host", "Hos"));
  EXPECT_FALSE(iequals("a", "b"));
  EXPECT_FALSE(iequals("[", "{"));        // 0x5B and 0x7B differ by the case bit
  EXPECT_FALSE(iequals("\xc9", "\xe9"));  // Latin-1 É/é are not ASCII
}

TEST(Text, IstartsWith) {
  EXPECT_TRUE(istarts_with("Transfer-Encoding2", "transfer-encoding"));
  EXPECT_TRUE(istarts_with("x", ""));
  EXPECT_FALSE(istarts_with("Transfer", "transfer-encoding"));
  EXPECT_FALSE(istarts_with("Xransfer-Encoding", "transfer-encoding"));
}

TEST(Text, Lowered) {
  EXPECT_EQ(lowered("HTTP://Example.COM:80/Path"), "http://example.com:80/path");
  EXPECT_EQ(lowered(""), "");
  EXPECT_EQ(lowered("@[`{"), "@[`{");
}

TEST(Text, TrimOwsTakesSpaceAndTabOnly) {
  EXPECT_EQ(trim_ows(" \t a b \t "), "a b");
  EXPECT_EQ(trim_ows(" \t "), "");
  EXPECT_EQ(trim_ows(""), "");
  EXPECT_EQ(trim_ows("\r\na\r\n"), "\r\na\r\n");  // CR/LF are never OWS
}

TEST(Text, TrimTakesAllAsciiWhiteSpace) {
  EXPECT_EQ(trim(" \t\r\n\f\va b\v\f\n\r\t "), "a b");
  EXPECT_EQ(trim("\r\n"), "");
  EXPECT_EQ(trim("x"), "x");
  EXPECT_EQ(trim(""), "");
}

TEST(Text, TrimKeepsTheView) {
  const std::string_view s = "  abc  ";
  const std::string_view t = trim(s);
  EXPECT_EQ(t.data(), s.data() + 2);  // a view into the input, not a copy
  EXPECT_EQ(trim_ows(s).data(), s.data() + 2);
}

}  // namespace
}  // namespace cdn::text
