// SPDX-License-Identifier: MIT
#include <gtest/gtest.h>

#include <string>

#include "common/http/message.hpp"
#include "common/http/parser.hpp"
#include "common/http/serialize.hpp"

namespace cdn::http {
namespace {

TEST(HeadWriter, Response) {
  std::string out;
  HeadWriter w(out);
  w.status_line(200)
      .header("Content-Type", "text/plain")
      .header("Content-Length", uint64_t{5})
      .end();
  EXPECT_TRUE(w.ok());
  EXPECT_EQ(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n");
}

TEST(HeadWriter, StatusLinesUseReasonPhrase) {
  for (int s : {206, 304, 404, 416, 431, 503}) {
    std::string out;
    HeadWriter(out).status_line(s);
    EXPECT_EQ(out, "HTTP/1.1 " + std::to_string(s) + " " + std::string(reason_phrase(s)) + "\r\n");
  }
  std::string out;
  HeadWriter w(out);
  w.status_line(42);
  EXPECT_FALSE(w.ok());
}

TEST(HeadWriter, RequestLine) {
  std::string out;
  HeadWriter w(out);
  w.request_line("GET", "/.cdn/status").header("Host", "r1:33000").end();
  EXPECT_TRUE(w.ok());
  EXPECT_EQ(out, "GET /.cdn/status HTTP/1.1\r\nHost: r1:33000\r\n\r\n");
  std::string bad;
  HeadWriter b(bad);
  b.request_line("GET", "/a b");
  EXPECT_FALSE(b.ok());
  std::string bad2;
  HeadWriter b2(bad2);
  b2.request_line("G T", "/");
  EXPECT_FALSE(b2.ok());
}

TEST(HeadWriter, RejectsInjection) {
  for (std::string_view v : {std::string_view("a\r\nSet-Cookie: x"), std::string_view("a\nb"),
                             std::string_view("a\rb"), std::string_view("a\0b", 3)}) {
    std::string out;
    HeadWriter w(out);
    w.header("X", v);
    EXPECT_FALSE(w.ok());
    EXPECT_EQ(out, "");  // skipped, nothing half-written
  }
  for (std::string_view n : {std::string_view("X\r\nY"), std::string_view("X Y"),
                             std::string_view("X:"), std::string_view("")}) {
    std::string out;
    HeadWriter w(out);
    w.header(n, "v");
    EXPECT_FALSE(w.ok());
    EXPECT_EQ(out, "");
  }
}

TEST(HeadWriter, OkStaysFalseAfterAFailure) {
  std::string out;
  HeadWriter w(out);
  w.status_line(200).header("X", "a\nb").header("Y", "ok").end();
  EXPECT_FALSE(w.ok());
}

TEST(HeadWriter, OutputParsesBack) {
  std::string out;
  HeadWriter(out)
      .status_line(404)
      .header("Content-Length", uint64_t{0})
      .header("Cache-Control", "no-store")
      .end();
  ResponseParser p;
  ASSERT_EQ(p.feed(out).status, ParseStatus::Complete);
  EXPECT_EQ(p.response().status, 404);
  EXPECT_EQ(p.response().reason, "Not Found");
  EXPECT_EQ(p.response().header("cache-control"), "no-store");
}

TEST(ReasonPhrase, CommonCodes) {
  EXPECT_EQ(reason_phrase(200), "OK");
  EXPECT_EQ(reason_phrase(206), "Partial Content");
  EXPECT_EQ(reason_phrase(302), "Found");
  EXPECT_EQ(reason_phrase(304), "Not Modified");
  EXPECT_EQ(reason_phrase(400), "Bad Request");
  EXPECT_EQ(reason_phrase(404), "Not Found");
  EXPECT_EQ(reason_phrase(405), "Method Not Allowed");
  EXPECT_EQ(reason_phrase(413), "Content Too Large");
  EXPECT_EQ(reason_phrase(414), "URI Too Long");
  EXPECT_EQ(reason_phrase(416), "Range Not Satisfiable");
  EXPECT_EQ(reason_phrase(431), "Request Header Fields Too Large");
  EXPECT_EQ(reason_phrase(500), "Internal Server Error");
  EXPECT_EQ(reason_phrase(501), "Not Implemented");
  EXPECT_EQ(reason_phrase(502), "Bad Gateway");
  EXPECT_EQ(reason_phrase(503), "Service Unavailable");
  EXPECT_EQ(reason_phrase(504), "Gateway Timeout");
  EXPECT_EQ(reason_phrase(505), "HTTP Version Not Supported");
  EXPECT_EQ(reason_phrase(299), "Unknown");
}

TEST(HttpDate, KnownValue) {
  EXPECT_EQ(http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
  EXPECT_EQ(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
  EXPECT_EQ(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777);
  EXPECT_EQ(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
}

TEST(HttpDate, RoundTrip) {
  for (int64_t t : {int64_t{0}, int64_t{86399}, int64_t{951782400} /* 2000-02-29 */,
                    int64_t{1700000000}, int64_t{2147483647}, int64_t{4102444800}}) {
    const std::string s = http_date(t);
    EXPECT_EQ(s.size(), 29u);
    EXPECT_EQ(parse_http_date(s), t) << s;
  }
  for (int64_t t = 0; t < 4000000000; t += 12345679) EXPECT_EQ(parse_http_date(http_date(t)), t);
}

// RFC 9110 §5.6.7: the obsolete forms a recipient must accept, names in any case.
TEST(HttpDate, ObsoleteForms) {
  EXPECT_EQ(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), 784111777);
  EXPECT_EQ(parse_http_date("Sun Nov  6 08:49:37 1994"), 784111777);
  EXPECT_EQ(parse_http_date("Wed Nov 16 08:49:37 1994"), 784975777);
  EXPECT_EQ(parse_http_date("SUN, 06 NOV 1994 08:49:37 gmt"), 784111777);
  // Two-digit years: 00-69 are 20xx without a clock; with one, at most 50 years ahead.
  EXPECT_EQ(parse_http_date("Thursday, 18-Aug-50 02:01:18 GMT"), 2544400878);
  EXPECT_EQ(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", 631152000), 784111777);
  // Seen from 1990, "50" is 1950: before the epoch, which no date here may be.
  EXPECT_EQ(parse_http_date("Friday, 18-Aug-50 02:01:18 GMT", 631152000), -1);
}

TEST(HttpDate, Malformed) {
  for (const char* s :
       {"", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 UTC", "Sun Nov 6 08:49:37 1994", "Sun Nov  6 08:49:37 94",
        "Sun, 06-Nov-94 08:49:37 GMT", "Monday, 06-Nov-94 08:49:37 GMT", "Mon Nov  6 08:49:37 1994",
        "Sun, 06 Nov 1994 24:00:00 GMT", "Sun, 06 Foo 1994 08:49:37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT", "Mon, 06 Nov 1994 08:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:60:37 GMT", "Sun, 06 Nov 19a4 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMTx"}) {
    EXPECT_EQ(parse_http_date(s), -1) << s;
  }
}

}  // namespace
}  // namespace cdn::http
