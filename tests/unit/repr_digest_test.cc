// SPDX-License-Identifier: MIT
#include "common/digest/repr_digest.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/digest/digest.hpp"

namespace cdn::digest {
namespace {

// SHA-256 and SHA-512 of "hello world\n".
const std::string kSha256 = "qUiQTy8PR5uPgZdpSzAYSw0u0cHNKh7A+4XSmaGSpEc=";
const std::string kSha512 =
    "2zl0qX8kB7fK4a5jfAAwaHoRkTJ01XhJJVjjnBbAF96E6s3Ixi/jTuThK0sUKIF/Cbaidgw/imZM6ulNJDSlkw==";
const std::string kSha256Hex = "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";

std::string hex256(const ReprDigest& d) { return to_hex(d.sha256->data(), d.sha256->size()); }

TEST(ReprDigest, ReadsSha256) {
  const auto d = parse_repr_digest("sha-256=:" + kSha256 + ":");
  ASSERT_TRUE(d);
  ASSERT_TRUE(d->sha256);
  EXPECT_EQ(hex256(*d), kSha256Hex);
  EXPECT_FALSE(d->sha512);
}

TEST(ReprDigest, ReadsBothAlgorithmsWithWhitespaceBetween) {
  for (const std::string sep : {",", ", ", " ,\t", ",\t "}) {
    const auto d =
        parse_repr_digest("  sha-512=:" + kSha512 + ":" + sep + "sha-256=:" + kSha256 + ":  ");
    ASSERT_TRUE(d) << sep;
    ASSERT_TRUE(d->sha256);
    ASSERT_TRUE(d->sha512);
    EXPECT_EQ(hex256(*d), kSha256Hex);
    EXPECT_EQ(to_base64(d->sha512->data(), d->sha512->size()), kSha512);
  }
}

TEST(ReprDigest, SkipsOtherMembersAndParameters) {
  const auto d = parse_repr_digest(
      "unixsum=30637, id-sha-256=:AAAA:;p=\"x\\\"y\", flag, list=(a \"b\" 1.5 ?0 :AA==:);q, "
      "tok=text/plain, neg=-12;w=0.125, sha-256=:" +
      kSha256 + ":;alg=*x");
  ASSERT_TRUE(d);
  ASSERT_TRUE(d->sha256);
  EXPECT_EQ(hex256(*d), kSha256Hex);
}

TEST(ReprDigest, TheLastOfARepeatedKeyCounts) {
  const auto d = parse_repr_digest("sha-256=:AAAA:, sha-256=:" + kSha256 + ":");
  ASSERT_TRUE(d);
  EXPECT_EQ(hex256(*d), kSha256Hex);
  // A broken earlier value that a later one replaces is no longer read.
  EXPECT_FALSE(parse_repr_digest("sha-256=:" + kSha256 + ":, sha-256=:AAAA:"));
}

TEST(ReprDigest, PaddingMayBeLeftOut) {
  std::string unpadded = kSha256;
  unpadded.pop_back();
  const auto d = parse_repr_digest("sha-256=:" + unpadded + ":");
  ASSERT_TRUE(d);
  EXPECT_EQ(hex256(*d), kSha256Hex);
  EXPECT_EQ(sha256_from_repr_digest("sha-256=:" + unpadded + ":"), "sha-256=:" + kSha256 + ":");
}

TEST(ReprDigest, EmptyFieldHasNoDigest) {
  const auto d = parse_repr_digest("");
  ASSERT_TRUE(d);
  EXPECT_FALSE(d->sha256);
  EXPECT_FALSE(d->sha512);
  EXPECT_EQ(sha256_from_repr_digest("   "), "");
  EXPECT_EQ(sha256_from_repr_digest("sha-512=:" + kSha512 + ":"), "");
}

TEST(ReprDigest, RefusesWhatIsNotADictionary) {
  const std::string good = ":" + kSha256 + ":";
  for (const std::string& bad : std::vector<std::string>{
           "SHA-256=" + good,                       // keys are lower case
           "sha-256=" + good + ",",                 // trailing comma
           "sha-256=" + good + ",,sha-512=:AA==:",  // empty member
           "sha-256=" + good + " x",                // no comma between members
           "sha-256=:" + kSha256,                   // unterminated byte sequence
           "sha-256=:" + kSha256.substr(0, 10) + "!" + kSha256.substr(11) + ":",
           "sha-256=:" + kSha256 + "==:",  // too much padding
           "sha-256=:A=AA:",               // padding inside
           "sha-256=:AAAAA:",              // a 6-bit tail
           "\tsha-256=" + good,            // only SP may lead
           "sha-256=" + good + ";",        // empty parameter
           "x=\"unterminated, sha-256=" + good,
           "x=1234567890123456, sha-256=" + good,  // integer too long
           "x=1.2345, sha-256=" + good,            // decimal too precise
           "x=(a b, sha-256=" + good,              // unterminated inner list
           "x=?2, sha-256=" + good,
           "x=@, sha-256=" + good,
       }) {
    EXPECT_FALSE(parse_repr_digest(bad)) << bad;
    EXPECT_EQ(sha256_from_repr_digest(bad), "") << bad;
  }
}

TEST(ReprDigest, RefusesADigestOfTheWrongShape) {
  EXPECT_FALSE(parse_repr_digest("sha-256=:" + kSha512 + ":"));  // 64 bytes, not 32
  EXPECT_FALSE(parse_repr_digest("sha-512=:" + kSha256 + ":"));
  EXPECT_FALSE(parse_repr_digest("sha-256=\"" + kSha256 + "\""));  // a string
  EXPECT_FALSE(parse_repr_digest("sha-256"));                      // Boolean true
  EXPECT_FALSE(parse_repr_digest("sha-256=(:" + kSha256 + ":)"));  // an inner list
}

// Every prefix of a valid field is parsed without reading past its end
// (the ASan build checks); none cut inside the digest yields one.
TEST(ReprDigest, EveryPrefix) {
  const std::string full = "a=(1 \"s\";k=?1);z, sha-256=:" + kSha256 + ":;p=tok";
  const size_t digest_end = full.find(kSha256) + kSha256.size() + 1;
  for (size_t n = 0; n < full.size(); ++n) {
    const std::string prefix = full.substr(0, n);
    const auto d = parse_repr_digest(prefix);
    if (n < digest_end) {
      EXPECT_TRUE(!d || !d->sha256) << prefix;
    } else if (d) {
      EXPECT_EQ(hex256(*d), kSha256Hex) << prefix;
    }
  }
  EXPECT_EQ(sha256_from_repr_digest(full), "sha-256=:" + kSha256 + ":");
}

}  // namespace
}  // namespace cdn::digest
