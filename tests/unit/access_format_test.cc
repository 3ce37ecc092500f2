// SPDX-License-Identifier: MIT
#include "common/access/format.hpp"

#include <gtest/gtest.h>

#include <string>

namespace cdn::access {
namespace {

using std::chrono::microseconds;

Record sample() {
  Record r;
  r.client = "192.0.2.7";
  r.method = "GET";
  r.target = "/a/b.txt?x=1";
  r.status = 200;
  r.bytes = 4096;
  r.duration = microseconds(1234);
  r.referer = "http://example.com/";
  r.user_agent = "curl/7.88.1";
  r.cache = "hit";
  r.site = "default";
  return r;
}

// 2026-12-06 16:04:46 UTC
constexpr int64_t kWhen = 1796573086;

TEST(AccessCombined, FieldsInNginxOrder) {
  std::string out;
  append_combined(out, sample(), Time{kWhen, 5, 0});
  EXPECT_EQ(out,
            "192.0.2.7 - - [06/Dec/2026:16:04:46 +0000] \"GET /a/b.txt?x=1 HTTP/1.1\" 200 4096 "
            "\"http://example.com/\" \"curl/7.88.1\" rt=\"0.001234\" cache=\"hit\" "
            "site=\"default\"\n");
}

TEST(AccessCombined, ZoneOffsetShiftsTheLocalTime) {
  std::string out;
  append_combined(out, sample(), Time{kWhen, 0, -(7 * 3600 + 30 * 60)});
  EXPECT_NE(out.find("[06/Dec/2026:08:34:46 -0730]"), std::string::npos) << out;
  out.clear();
  // Across a year boundary, east of UTC.
  append_combined(out, sample(), Time{1798761599, 0, 3600});  // 2026-12-31 23:59:59 UTC
  EXPECT_NE(out.find("[01/Jan/2027:00:59:59 +0100]"), std::string::npos) << out;
}

TEST(AccessCombined, EmptyFieldsAreDashesAndUpstreamIsAdded) {
  Record r = sample();
  r.referer = {};
  r.user_agent = {};
  r.cache = {};
  r.upstream = "127.0.0.2:33000";
  std::string out;
  append_combined(out, r, Time{kWhen, 0, 0});
  EXPECT_NE(out.find("4096 \"-\" \"-\" rt="), std::string::npos) << out;
  EXPECT_NE(out.find("cache=\"-\""), std::string::npos) << out;
  EXPECT_NE(out.find(" upstream=\"127.0.0.2:33000\"\n"), std::string::npos) << out;
}

TEST(AccessCombined, ClientBytesCannotSplitOrForgeALine) {
  Record r = sample();
  r.user_agent = "evil\"\n1.2.3.4 - - [x] \"GET / HTTP/1.1\" 200 1 \"-\" \"\\\x7f\xc3\xa9";
  std::string out;
  append_combined(out, r, Time{kWhen, 0, 0});
  EXPECT_EQ(out.find('\n'), out.size() - 1) << out;
  EXPECT_NE(out.find("\"evil\\x22\\x0A1.2.3.4 - - [x] \\x22GET / HTTP/1.1\\x22 200 1 \\x22-\\x22 "
                     "\\x22\\x5C\\x7F\\xC3\\xA9\""),
            std::string::npos)
      << out;
}

TEST(AccessCombined, UnparsedRequestLineIsADash) {
  Record r = sample();
  r.method = {};
  r.target = {};
  r.status = 400;
  r.bytes = 12;
  std::string out;
  append_combined(out, r, Time{kWhen, 0, 0});
  EXPECT_NE(out.find("] \"-\" 400 12 "), std::string::npos) << out;
}

TEST(AccessJson, OneObjectPerLine) {
  Record r = sample();
  r.upstream = "[::1]:8080";
  r.version_minor = 0;
  std::string out;
  append_json(out, r, Time{kWhen, 42, 3600});
  EXPECT_EQ(out,
            "{\"time\":\"2026-12-06T17:04:46.000042+01:00\",\"client\":\"192.0.2.7\","
            "\"method\":\"GET\",\"target\":\"/a/b.txt?x=1\",\"protocol\":\"HTTP/1.0\","
            "\"status\":200,\"bytes\":4096,\"duration\":0.001234,"
            "\"referer\":\"http://example.com/\",\"user_agent\":\"curl/7.88.1\","
            "\"cache\":\"hit\",\"site\":\"default\",\"upstream\":\"[::1]:8080\"}\n");
}

TEST(AccessJson, EscapesEveryByteJsonCannotHoldRaw) {
  Record r = sample();
  r.user_agent = "a\"b\\c\n\x01\xff";
  std::string out;
  append_json(out, r, Time{kWhen, 0, 0});
  EXPECT_NE(out.find("\"user_agent\":\"a\\\"b\\\\c\\u000A\\u0001\\u00FF\""), std::string::npos)
      << out;
  EXPECT_EQ(out.find('\n'), out.size() - 1);
}

TEST(AccessFormat, Names) {
  EXPECT_EQ(format_from_string("combined"), Format::Combined);
  EXPECT_EQ(format_from_string("json"), Format::Json);
  EXPECT_FALSE(format_from_string("common"));
  std::string a, b;
  append(a, Format::Json, sample(), Time{kWhen, 0, 0});
  append_json(b, sample(), Time{kWhen, 0, 0});
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace cdn::access
