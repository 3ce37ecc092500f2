// SPDX-License-Identifier: MIT
// RequestParser / ResponseParser over libhttp-parser: framing, limits, the
// status each malformed input gets, and incremental feeding (every prefix,
// byte by byte, split fields), picohttpparser-test style.
#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/http/parser.hpp"

namespace cdn::http {
namespace {

const std::string kGet =
    "GET /a/b?x=1 HTTP/1.1\r\n"
    "Host: example.com\r\n"
    "User-Agent: test/1.0\r\n"
    "Accept: */*\r\n"
    "\r\n";

ParseResult feed_all(RequestParser& p, std::string_view data) { return p.feed(data); }

int error_status(std::string_view data, const Limits& limits = {}) {
  RequestParser p(limits);
  ParseResult r = p.feed(data);
  EXPECT_EQ(r.status, ParseStatus::Error) << data;
  return r.http_status;
}

// Feeds byte by byte; returns the result of the last feed.
ParseResult feed_bytes(RequestParser& p, std::string_view data) {
  ParseResult r;
  for (size_t i = 0; i < data.size(); ++i) {
    r = p.feed(data.substr(i, 1));
    if (r.status != ParseStatus::NeedMore) return r;
  }
  return r;
}

// Feeds `msg` to `p` in two reads split at `cut` (0 <= cut <= msg.size()):
// the first must ask for more unless it is the whole message, and the last
// must complete; `last` gets that result. Tests call it for every cut, so a
// verdict that depends on where the reads end fails at the cut that shows it.
template <class Parser>
::testing::AssertionResult feed_in_two(Parser& p, std::string_view msg, size_t cut,
                                       ParseResult* last = nullptr) {
  ParseResult r = p.feed(msg.substr(0, cut));
  if (cut < msg.size()) {
    if (r.status != ParseStatus::NeedMore) {
      return ::testing::AssertionFailure()
             << "cut " << cut << ": the first read did not ask for more";
    }
    r = p.feed(msg.substr(cut));
  }
  if (r.status != ParseStatus::Complete) {
    return ::testing::AssertionFailure() << "cut " << cut << ": not complete (" << r.reason << ")";
  }
  if (last != nullptr) *last = r;
  return ::testing::AssertionSuccess();
}

TEST(RequestParser, SimpleGet) {
  RequestParser p;
  ParseResult r = feed_all(p, kGet);
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.consumed, kGet.size());
  const Request& req = p.request();
  EXPECT_EQ(req.method, "GET");
  EXPECT_EQ(req.target, "/a/b?x=1");
  EXPECT_EQ(req.version_major, 1);
  EXPECT_EQ(req.version_minor, 1);
  ASSERT_EQ(req.headers.size(), 3u);
  EXPECT_EQ(req.headers[0].name, "Host");
  EXPECT_EQ(req.headers[0].value, "example.com");
  EXPECT_TRUE(req.keep_alive);
  EXPECT_FALSE(req.content_length.has_value());
  EXPECT_FALSE(req.chunked);
  EXPECT_TRUE(p.headers_complete());
}

TEST(RequestParser, HeaderLookupIsCaseInsensitive) {
  RequestParser p;
  ASSERT_EQ(p.feed(kGet).status, ParseStatus::Complete);
  EXPECT_EQ(p.request().header("host"), "example.com");
  EXPECT_EQ(p.request().header("USER-AGENT"), "test/1.0");
  EXPECT_FALSE(p.request().header("Cookie").has_value());
}

TEST(RequestParser, EveryPrefixNeedsMoreThenCompletes) {
  for (size_t cut = 0; cut < kGet.size(); ++cut) {
    RequestParser p;
    ParseResult r1 = p.feed(std::string_view(kGet).substr(0, cut));
    ASSERT_EQ(r1.status, ParseStatus::NeedMore) << "cut " << cut;
    ASSERT_EQ(r1.consumed, cut);
    ParseResult r2 = p.feed(std::string_view(kGet).substr(cut));
    ASSERT_EQ(r2.status, ParseStatus::Complete) << "cut " << cut;
    EXPECT_EQ(r2.consumed, kGet.size() - cut);
    EXPECT_EQ(p.request().target, "/a/b?x=1");
    EXPECT_EQ(p.request().header("User-Agent"), "test/1.0") << "cut " << cut;
    EXPECT_EQ(p.request().headers.size(), 3u);
  }
}

TEST(RequestParser, EveryPrefixAloneIsNeedMore) {
  // A fresh parser given only a prefix must never claim completion or error.
  for (size_t cut = 0; cut < kGet.size(); ++cut) {
    RequestParser p;
    EXPECT_EQ(p.feed(std::string_view(kGet).substr(0, cut)).status, ParseStatus::NeedMore) << cut;
  }
}

TEST(RequestParser, ByteByByte) {
  RequestParser p;
  ParseResult r = feed_bytes(p, kGet);
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.consumed, 1u);
  EXPECT_EQ(p.request().method, "GET");
  EXPECT_EQ(p.request().target, "/a/b?x=1");
  EXPECT_EQ(p.request().header("host"), "example.com");
  EXPECT_EQ(p.request().header("accept"), "*/*");
}

TEST(RequestParser, HeaderSplitAcrossFeeds) {
  RequestParser p;
  EXPECT_EQ(p.feed("GET / HTTP/1.1\r\nHo").status, ParseStatus::NeedMore);
  EXPECT_EQ(p.feed("st: exa").status, ParseStatus::NeedMore);
  EXPECT_EQ(p.feed("mple.c").status, ParseStatus::NeedMore);
  EXPECT_EQ(p.feed("om   \r\nX-Lo").status, ParseStatus::NeedMore);
  EXPECT_EQ(p.feed("ng: a b").status, ParseStatus::NeedMore);
  ParseResult r = p.feed(" c\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  ASSERT_EQ(p.request().headers.size(), 2u);
  EXPECT_EQ(p.request().headers[0].name, "Host");
  EXPECT_EQ(p.request().headers[0].value, "example.com");
  EXPECT_EQ(p.request().headers[1].name, "X-Long");
  EXPECT_EQ(p.request().headers[1].value, "a b c");
}

TEST(RequestParser, ValuesAreTrimmedAndEmptyValuesKept) {
  RequestParser p;
  ASSERT_EQ(p.feed("GET / HTTP/1.1\r\nHost:  h \t\r\nX-Empty:\r\nX-Sp: \t \r\n\r\n").status,
            ParseStatus::Complete);
  EXPECT_EQ(p.request().header("host"), "h");
  EXPECT_EQ(p.request().header("x-empty"), "");
  EXPECT_EQ(p.request().header("x-sp"), "");
}

TEST(RequestParser, PipelinedTwoInOneBuffer) {
  const std::string first = "GET /one HTTP/1.1\r\nHost: a\r\n\r\n";
  const std::string second = "HEAD /two HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
  const std::string buf = first + second;
  RequestParser p;
  ParseResult r = p.feed(buf);
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.consumed, first.size());
  EXPECT_EQ(p.request().target, "/one");
  EXPECT_TRUE(p.request().keep_alive);
  // Feeding again without reset() is a caller bug.
  EXPECT_EQ(p.feed("x").status, ParseStatus::Error);
  p.reset();
  r = p.feed(std::string_view(buf).substr(first.size()));
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.consumed, second.size());
  EXPECT_EQ(p.request().method, "HEAD");
  EXPECT_EQ(p.request().target, "/two");
  EXPECT_FALSE(p.request().keep_alive);
}

TEST(RequestParser, PipelinedManyWithLoop) {
  std::string buf;
  for (int i = 0; i < 10; ++i) buf += "GET /" + std::to_string(i) + " HTTP/1.1\r\nHost: h\r\n\r\n";
  buf += "GET /partial HTTP/1.1\r\nHo";
  RequestParser p;
  std::string_view rest = buf;
  std::vector<std::string> targets;
  for (;;) {
    ParseResult r = p.feed(rest);
    rest.remove_prefix(r.consumed);
    if (r.status != ParseStatus::Complete) {
      EXPECT_EQ(r.status, ParseStatus::NeedMore);
      break;
    }
    targets.push_back(p.request().target);
    p.reset();
  }
  ASSERT_EQ(targets.size(), 10u);
  EXPECT_EQ(targets[9], "/9");
  EXPECT_TRUE(rest.empty());
  ASSERT_EQ(p.feed("st: h\r\n\r\n").status, ParseStatus::Complete);
  EXPECT_EQ(p.request().target, "/partial");
}

TEST(RequestParser, PipelinedWithBodies) {
  Limits l;
  l.max_body = 100;
  const std::string a = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
  const std::string b =
      "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n0\r\n\r\n";
  const std::string c = "GET /c HTTP/1.1\r\nHost: h\r\n\r\n";
  const std::string buf = a + b + c;
  RequestParser p(l);
  ParseResult r = p.feed(buf);
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.consumed, a.size());
  EXPECT_EQ(p.request().content_length, 5u);
  p.reset();
  r = p.feed(std::string_view(buf).substr(a.size()));
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.consumed, b.size());
  EXPECT_TRUE(p.request().chunked);
  p.reset();
  r = p.feed(std::string_view(buf).substr(a.size() + b.size()));
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(p.request().target, "/c");
}

TEST(RequestParser, ContentLengthZeroIsFineWithNoBodyLimit) {
  RequestParser p;
  ASSERT_EQ(p.feed("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").status,
            ParseStatus::Complete);
  EXPECT_EQ(p.request().content_length, 0u);
}

TEST(RequestParser, LeadingEmptyLinesAreIgnored) {
  RequestParser p;
  ASSERT_EQ(p.feed("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n").status, ParseStatus::Complete);
  EXPECT_EQ(p.request().target, "/");
}

// ---- limits

TEST(RequestParser, LongTargetIs414) {
  Limits l;
  l.max_request_line = 100;
  EXPECT_EQ(error_status("GET /" + std::string(200, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n", l), 414);
  // Exactly at the limit is accepted: "GET " (4) + target (96) = 100.
  RequestParser p(l);
  EXPECT_EQ(p.feed("GET /" + std::string(95, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n").status,
            ParseStatus::Complete);
  RequestParser q(l);
  EXPECT_EQ(q.feed("GET /" + std::string(96, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n").http_status,
            414);
}

TEST(RequestParser, LongTargetByteByByteIs414) {
  Limits l;
  l.max_request_line = 64;
  RequestParser p(l);
  ParseResult r = feed_bytes(p, "GET /" + std::string(100, 'a'));
  ASSERT_EQ(r.status, ParseStatus::Error);
  EXPECT_EQ(r.http_status, 414);
  // Stays in error.
  EXPECT_EQ(p.feed("a").http_status, 414);
  p.reset();
  EXPECT_EQ(p.feed(kGet).status, ParseStatus::Complete);
}

TEST(RequestParser, HeaderBytesOverLimitIs431) {
  Limits l;
  l.max_header_bytes = 256;
  EXPECT_EQ(
      error_status("GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + std::string(300, 'v') + "\r\n\r\n", l),
      431);
  RequestParser p(l);
  ParseResult r = feed_bytes(p, "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + std::string(300, 'v'));
  EXPECT_EQ(r.http_status, 431);
}

TEST(RequestParser, HugeHeaderNameIs431) {
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\n" + std::string(20000, 'X') + ": v\r\n\r\n"), 431);
}

TEST(RequestParser, HeaderCountOverLimitIs431) {
  Limits l;
  l.max_headers = 10;
  std::string req = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 9; ++i) req += "X-" + std::to_string(i) + ": v\r\n";
  {
    RequestParser p(l);
    EXPECT_EQ(p.feed(req + "\r\n").status, ParseStatus::Complete);  // exactly 10
  }
  req += "X-last: v\r\n\r\n";
  EXPECT_EQ(error_status(req, l), 431);
}

TEST(RequestParser, EndlessWhitespaceIs431) {
  // Bytes no callback sees (OWS runs) are capped by the raw head scan.
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\nHost:" + std::string(100000, ' ')), 431);
}

TEST(RequestParser, BodyOverLimitIs413) {
  EXPECT_EQ(error_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"), 413);
  Limits l;
  l.max_body = 4;
  EXPECT_EQ(error_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n", l), 413);
  EXPECT_EQ(error_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n",
                         l),
            413);
  RequestParser p(l);
  EXPECT_EQ(p.feed("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd").status,
            ParseStatus::Complete);
}

// ---- methods, versions, malformed

TEST(RequestParser, UnknownMethodIs501) {
  EXPECT_EQ(error_status("FOO / HTTP/1.1\r\nHost: h\r\n\r\n"), 501);
  EXPECT_EQ(error_status("GETT / HTTP/1.1\r\nHost: h\r\n\r\n"), 501);
  EXPECT_EQ(error_status("BREW / HTTP/1.1\r\nHost: h\r\n\r\n"), 501);
}

TEST(RequestParser, BinaryGarbageIs400) {
  EXPECT_EQ(error_status(std::string("\x16\x03\x01\x02\x00\x01\x00", 7)), 400);
  EXPECT_EQ(error_status("G\x01T / HTTP/1.1\r\n\r\n"), 400);
}

TEST(RequestParser, MethodVerdictDoesNotDependOnSplit) {
  // Found by the fuzzer: the 501/400 choice once looked past the refused byte.
  for (std::string_view in :
       {std::string_view("8\r\nSMUGGLED\r\n"), std::string_view("GEX\x01 / HTTP/1.1\r\n")}) {
    RequestParser whole;
    const int a = whole.feed(in).http_status;
    RequestParser bytes;
    const int b = feed_bytes(bytes, in).http_status;
    EXPECT_EQ(a, b) << in;
    EXPECT_EQ(a, 501) << in;
  }
}

TEST(RequestParser, OtherMethodsParse) {
  for (const char* m : {"HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}) {
    RequestParser p;
    ASSERT_EQ(p.feed(std::string(m) + " / HTTP/1.1\r\nHost: h\r\n\r\n").status,
              ParseStatus::Complete)
        << m;
    EXPECT_EQ(p.request().method, m);
  }
}

TEST(RequestParser, BadVersionIs505) {
  EXPECT_EQ(error_status("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
  EXPECT_EQ(error_status("GET / HTTP/1.10\r\nHost: h\r\n\r\n"), 505);
  EXPECT_EQ(error_status("GET / HTTP/0.9\r\n\r\n"), 505);
  EXPECT_EQ(error_status("GET /\r\n\r\n"), 400);  // HTTP/0.9 simple request: no version
  EXPECT_EQ(error_status("GET / HTTP/x.1\r\nHost: h\r\n\r\n"), 505);
}

TEST(RequestParser, MalformedIs400) {
  EXPECT_EQ(error_status("GET / HTTX/1.1\r\nHost: h\r\n\r\n"), 400);
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\nHost h\r\n\r\n"), 400);
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n"), 400);
  EXPECT_EQ(error_status(std::string("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", 33)), 400);
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\nHost : h\r\n\r\n"), 400);
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\nHo st: h\r\n\r\n"), 400);
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n"), 400);
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n"), 400);
}

TEST(RequestParser, BareLfIs400) {
  EXPECT_EQ(error_status("GET / HTTP/1.1\nHost: h\n\n"), 400);
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\nHost: h\n\r\n"), 400);
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\nHost: h\r\n\n"), 400);
  RequestParser p;
  EXPECT_EQ(feed_bytes(p, "GET / HTTP/1.1\r\nHost: h\n").http_status, 400);
}

TEST(RequestParser, BareCrIs400) {
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n"), 400);
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\nHost: h\r\n\rX"), 400);
}

TEST(RequestParser, ObsFoldIs400) {
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"), 400);
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n"), 400);
  // Whitespace before the first header line is the same construct.
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\n Host: h\r\n\r\n"), 400);
}

// ---- Host and framing rules (request smuggling)

TEST(RequestParser, MissingHostIn11Is400) {
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), 400);
  RequestParser p;
  EXPECT_EQ(p.feed("GET / HTTP/1.0\r\n\r\n").status, ParseStatus::Complete);
}

TEST(RequestParser, TwoHostsIs400) {
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
  EXPECT_EQ(error_status("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"), 400);
}

TEST(RequestParser, ContentLengthAndTransferEncodingIs400) {
  Limits l;
  l.max_body = 1000;
  EXPECT_EQ(error_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                         l),
            400);
  EXPECT_EQ(error_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                         "Content-Length: 5\r\n\r\n0\r\n\r\n",
                         l),
            400);
}

TEST(RequestParser, TwoContentLengthsIs400) {
  Limits l;
  l.max_body = 1000;
  EXPECT_EQ(error_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                         "Content-Length: 6\r\n\r\nhello!",
                         l),
            400);
  EXPECT_EQ(error_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                         "Content-Length: 5\r\n\r\nhello",
                         l),
            400);
  EXPECT_EQ(error_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhello", l),
            400);
}

TEST(RequestParser, TransferEncodingOtherThanChunkedIs400) {
  Limits l;
  l.max_body = 1000;
  EXPECT_EQ(error_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", l), 400);
  EXPECT_EQ(
      error_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", l),
      400);
  EXPECT_EQ(error_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n",
                         l),
            400);
  EXPECT_EQ(error_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n", l),
            400);
  EXPECT_EQ(error_status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", l), 400);
  RequestParser p(l);
  EXPECT_EQ(
      p.feed("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n").status,
      ParseStatus::Complete);
}

// ---- keep-alive

bool keep_alive_of(std::string_view req) {
  RequestParser p;
  EXPECT_EQ(p.feed(req).status, ParseStatus::Complete) << req;
  return p.request().keep_alive;
}

TEST(RequestParser, KeepAliveRules) {
  EXPECT_TRUE(keep_alive_of("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  EXPECT_FALSE(keep_alive_of("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
  EXPECT_FALSE(keep_alive_of("GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n"));
  EXPECT_TRUE(keep_alive_of("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"));
  EXPECT_FALSE(keep_alive_of("GET / HTTP/1.0\r\n\r\n"));
  EXPECT_TRUE(keep_alive_of("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  EXPECT_FALSE(keep_alive_of("GET / HTTP/1.0\r\nConnection: close\r\n\r\n"));
  // An upgrade we will not perform ends the connection after the answer.
  EXPECT_FALSE(
      keep_alive_of("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n"
                    "Upgrade: websocket\r\n\r\n"));
}

TEST(RequestParser, VersionIsReported) {
  RequestParser p;
  ASSERT_EQ(p.feed("GET / HTTP/1.0\r\n\r\n").status, ParseStatus::Complete);
  EXPECT_EQ(p.request().version_major, 1);
  EXPECT_EQ(p.request().version_minor, 0);
}

TEST(RequestParser, ResetClearsState) {
  RequestParser p;
  ASSERT_EQ(p.feed("GET /x HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n").status, ParseStatus::Complete);
  p.reset();
  EXPECT_FALSE(p.headers_complete());
  EXPECT_TRUE(p.request().headers.empty());
  EXPECT_TRUE(p.request().target.empty());
  ASSERT_EQ(p.feed("GET /y HTTP/1.0\r\n\r\n").status, ParseStatus::Complete);
  EXPECT_EQ(p.request().target, "/y");
  EXPECT_TRUE(p.request().headers.empty());
}

TEST(RequestParser, EmptyFeedIsNeedMore) {
  RequestParser p;
  EXPECT_EQ(p.feed("").status, ParseStatus::NeedMore);
  EXPECT_EQ(p.feed("GET / HTTP/1.1\r\n").status, ParseStatus::NeedMore);
  EXPECT_EQ(p.feed("").status, ParseStatus::NeedMore);
  EXPECT_EQ(p.feed("Host: h\r\n\r\n").status, ParseStatus::Complete);
}

TEST(RequestParser, HeadersCompleteBeforeBody) {
  Limits l;
  l.max_body = 10;
  RequestParser p(l);
  EXPECT_EQ(p.feed("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab").status,
            ParseStatus::NeedMore);
  EXPECT_TRUE(p.headers_complete());
  EXPECT_EQ(p.feed("cd").status, ParseStatus::Complete);
}

// Feeds byte by byte up to the end of the first message; `consumed` counts
// from the start of `data`, as one whole feed would.
ParseResult feed_bytes_total(RequestParser& p, std::string_view data) {
  ParseResult r;
  for (size_t i = 0; i < data.size(); ++i) {
    r = p.feed(data.substr(i, 1));
    if (r.status != ParseStatus::NeedMore) {
      r.consumed += i;
      return r;
    }
  }
  r.consumed = data.size();
  return r;
}

// What a head meant, for comparing two ways of feeding it.
std::string meaning(RequestParser& p, ParseResult r) {
  if (r.status == ParseStatus::Error) return "error " + std::to_string(r.http_status);
  if (r.status == ParseStatus::NeedMore) return "need more";
  const Request& q = p.request();
  std::string out = q.method + " " + q.target + " 1." + std::to_string(q.version_minor) +
                    (q.keep_alive ? " ka" : " close") + " @" + std::to_string(r.consumed);
  for (const Header& h : q.headers) out += "|" + h.name + ":" + h.value;
  return out;
}

// A GET or HEAD whose head arrives whole is read without http-parser (see
// parse_whole_head); byte by byte it never is. Every head here, taken or
// declined by that path, must mean the same both ways.
TEST(RequestParser, WholeHeadMeansWhatByteByByteMeans) {
  const std::vector<std::string> heads = {
      "GET /4k.html HTTP/1.1\r\nHost: 127.0.0.1:33000\r\n\r\n",
      "HEAD / HTTP/1.1\r\nhost: h\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
      "GET /a?b=c#d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\nConnection:  Keep-Alive \t\r\n\r\n",
      "GET /a HTTP/1.0\r\n\r\n",
      "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
      "GET /a HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\nConnection: close, foo\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Spaces:   \r\nY: 1\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\nX: a\tb  \r\n\r\n",
      "GET /\"<>{}|\\^` HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n",
      // http-parser matches these names by prefix, and Proxy-Connection as Connection.
      "GET /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding2: chunked\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\nContent-Length2: 5\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\nProxy-Connection: close\r\n\r\n",
      "GET /a HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\nConnection2: close\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\nConnection: close \r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\t\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\nUpgrade2: x\r\n\r\n",
      "GET /a HTTP/1.1\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost : h\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\nX: 1\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\rX: 1\r\n\r\n",
      "GET /a HTTP/2.0\r\nHost: h\r\n\r\n",
      "GET /a HTTP/1.2\r\nHost: h\r\n\r\n",
      "GET  /a HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET a HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n",
      "get /a HTTP/1.1\r\nHost: h\r\n\r\n",
      "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
      "\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n",
  };
  for (const std::string& head : heads) {
    RequestParser whole;
    const std::string a = meaning(whole, whole.feed(head));
    RequestParser bytes;
    EXPECT_EQ(a, meaning(bytes, feed_bytes_total(bytes, head))) << head;
  }
  // Near the limits the whole-head path steps aside and the limits decide.
  Limits l;
  l.max_headers = 2;
  l.max_request_line = 20;
  for (const std::string head : {"GET /a HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n",
                                 "GET /aaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: h\r\n\r\n"}) {
    RequestParser whole(l);
    const std::string a = meaning(whole, whole.feed(head));
    RequestParser bytes(l);
    EXPECT_EQ(a, meaning(bytes, feed_bytes_total(bytes, head))) << head;
    EXPECT_TRUE(a.starts_with("error 4")) << a;
  }
}

// ---- chunked bodies (strict framing) and request-targets

// Feeds `msg` whole, in two reads at every cut, and byte by byte, each to a
// fresh parser: every schedule must end in an error with `status`.
::testing::AssertionResult refused_every_split(std::string_view msg, int status,
                                               const Limits& limits = {}) {
  for (size_t cut = 0; cut <= msg.size(); ++cut) {
    RequestParser p(limits);
    ParseResult r = p.feed(msg.substr(0, cut));
    if (r.status == ParseStatus::NeedMore && cut < msg.size()) r = p.feed(msg.substr(cut));
    if (r.status != ParseStatus::Error || r.http_status != status) {
      return ::testing::AssertionFailure()
             << "cut " << cut << ": " << meaning(p, r) << " (" << r.reason << "), not " << status;
    }
  }
  RequestParser p(limits);
  const ParseResult r = feed_bytes(p, msg);
  if (r.status != ParseStatus::Error || r.http_status != status) {
    return ::testing::AssertionFailure() << "byte by byte: " << meaning(p, r) << ", not " << status;
  }
  return ::testing::AssertionSuccess();
}

// What the first request of `msg` means, the same for every schedule (whole,
// two reads at every cut, byte by byte), or a failure naming the schedule
// that differs. `consumed` counts from the start of `msg`.
::testing::AssertionResult same_every_split(std::string_view msg, std::string* out,
                                            const Limits& limits = {}) {
  RequestParser whole(limits);
  *out = meaning(whole, whole.feed(msg));
  for (size_t cut = 0; cut <= msg.size(); ++cut) {
    RequestParser p(limits);
    ParseResult r = p.feed(msg.substr(0, cut));
    if (r.status == ParseStatus::NeedMore && cut < msg.size()) {
      r = p.feed(msg.substr(cut));
      r.consumed += cut;
    }
    if (const std::string m = meaning(p, r); m != *out) {
      return ::testing::AssertionFailure() << "cut " << cut << ": " << m << " vs " << *out;
    }
  }
  RequestParser p(limits);
  if (const std::string m = meaning(p, feed_bytes_total(p, msg)); m != *out) {
    return ::testing::AssertionFailure() << "byte by byte: " << m << " vs " << *out;
  }
  return ::testing::AssertionSuccess();
}

const std::string kChunkedHead =
    "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";

Limits body_limits() {
  Limits l;
  l.max_body = 1000;
  return l;
}

TEST(ChunkedRequest, StrictFramingIsReadWhereItEnds) {
  const std::string next = "GET /next HTTP/1.1\r\nHost: h\r\n\r\n";
  for (const std::string body : {
           "0\r\n\r\n",
           "5\r\nhello\r\n0\r\n\r\n",
           "000005\r\nhello\r\n0000\r\n\r\n",
           "a\r\n0123456789\r\n0\r\n\r\n",
           "5;ext\r\nhello\r\n0;a=b;c=\"q\\\"d\"\r\n\r\n",
           "5 ; name = value ;x\t=\t\"y z\"\r\nhello\r\n0\r\n\r\n",
           "5\r\nhello\r\n0\r\nTrailer: x\r\nOther:\r\nT3: a \t b\r\n\r\n",
           "0\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
       }) {
    const std::string msg = kChunkedHead + body + next;
    std::string m;
    ASSERT_TRUE(same_every_split(msg, &m, body_limits())) << body;
    EXPECT_TRUE(m.ends_with(" @" + std::to_string(kChunkedHead.size() + body.size()) +
                            "|Host:h|Transfer-Encoding:chunked"))
        << body << " -> " << m;
  }
}

// Each leniency http-parser (non-strict) had: all were accepted.
TEST(ChunkedRequest, LenientFramingIs400) {
  for (const std::string body : {
           "2;\nxx\r\n0\r\n\r\n",            // bare LF in a chunk extension
           "2;a=b\nxx\r\n0\r\n\r\n",         // the same after a value
           "2\nxx\r\n0\r\n\r\n",             // bare LF ending the size line
           "5\r\nabcdeXY0\r\n\r\n",          // any two bytes taken as the CRLF after data
           "5\r\nabcde\rX0\r\n\r\n",         // CR and anything
           "5\r\nabcde\n0\r\n\r\n",          // bare LF after data
           "5 x\r\nabcde\r\n0\r\n\r\n",      // junk after the size
           "5 \r\nabcde\r\n0\r\n\r\n",       // whitespace with no extension
           "5x\r\nabcde\r\n0\r\n\r\n",       // a non-hex size byte
           "5;\r\nabcde\r\n0\r\n\r\n",       // ';' without a name
           "5;a=\r\nabcde\r\n0\r\n\r\n",     // '=' without a value
           "5;a=\"b\r\nabcde\r\n0\r\n\r\n",  // unterminated quoted-string
           "5;a=\"b\"c\r\nabcde\r\n0\r\n\r\n",
           "5;a@b\r\nabcde\r\n0\r\n\r\n",  // not a token
           "5;a=b\x01\r\nabcde\r\n0\r\n\r\n",
           "5\r\r\nabcde\r\n0\r\n\r\n",    // bare CR
           "\r\n5\r\nabcde\r\n0\r\n\r\n",  // empty size line
           "-5\r\nabcde\r\n0\r\n\r\n",
           "0x5\r\nabcde\r\n0\r\n\r\n",
           "0\r\nX: a\nY: b\r\n\r\n",       // bare LF in a trailer
           "0\r\nX: a\r\n folded\r\n\r\n",  // obs-fold in a trailer
           "0\r\nX: a\r\n\tfolded\r\n\r\n",
           "0\r\nX : a\r\n\r\n",  // whitespace in a trailer name
           "0\r\nno colon\r\n\r\n",
           "0\r\n\n",  // bare LF ending the body
           "0\r\n\rX",
           "00000000000000005\r\nabcde\r\n0\r\n\r\n",  // 17 digits
       }) {
    EXPECT_TRUE(refused_every_split(kChunkedHead + body, 400, body_limits())) << body;
  }
  const std::string nul("0\r\nX: a\0b\r\n\r\n", 12);  // NUL in a trailer value
  EXPECT_TRUE(refused_every_split(kChunkedHead + nul, 400, body_limits()));
}

TEST(ChunkedRequest, SizesAndMetadataAreBounded) {
  // A chunk over max_body is refused at its size line, before its data.
  EXPECT_TRUE(refused_every_split(kChunkedHead + "3e9\r\n", 413, body_limits()));
  EXPECT_TRUE(refused_every_split(kChunkedHead + "ffffffffffffffff\r\n", 413, body_limits()));
  EXPECT_TRUE(refused_every_split(kChunkedHead + "3e8\r\n" + std::string(1000, 'a') + "\r\n1\r\n",
                                  413, body_limits()));
  // GET/HEAD carry no body in the daemons' eyes (max_body 0 by default).
  EXPECT_TRUE(refused_every_split(kChunkedHead + "1\r\n", 413));
  // Extensions and trailers together are bounded by max_header_bytes.
  Limits l = body_limits();
  l.max_header_bytes = 64;
  const std::string ext = ";" + std::string(40, 'e');
  // Line ends are not counted: 41 + 23 = 64 bytes.
  const std::string ok =
      kChunkedHead + "1" + ext + "\r\na\r\n0\r\nT: " + std::string(20, 't') + "\r\n\r\n";
  std::string m;
  ASSERT_TRUE(same_every_split(ok, &m, l));
  EXPECT_TRUE(m.starts_with("POST /up")) << m;
  EXPECT_TRUE(refused_every_split(
      kChunkedHead + "1" + ext + "\r\na\r\n0\r\nT: " + std::string(21, 't') + "\r\n\r\n", 431, l));
  EXPECT_TRUE(refused_every_split(kChunkedHead + "0;" + std::string(100, 'e'), 431, l));
  EXPECT_TRUE(refused_every_split(kChunkedHead + "0\r\nT: " + std::string(100, 't'), 431, l));
}

// A front end that ends the size line at the LF reads one request (chunks of
// 2 and 0x45 bytes, the second holding the "smuggled" head); http-parser read
// "2;\nxx" as size 2 with an extension, took "45" as data and "\r\n" as its
// CRLF, ended the body at "0\r\n\r\n" and then parsed GET /smuggled.
TEST(ChunkedRequest, SmugglingPayloadIsOneRefusal) {
  const std::string inner =
      "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\nX-Pad: " + std::string(20, 'p') + "\r\n\r\n";
  ASSERT_EQ(inner.size(), 0x45u);
  const std::string msg =
      "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2;\nxx\r\n45\r\n" + inner +
      "\r\n0\r\n\r\n";
  EXPECT_TRUE(refused_every_split(msg, 400, body_limits()));
}

TEST(RequestTarget, BytesNoClientSendsRawAre400) {
  for (const std::string bad :
       {"/a\tb", "/?q=a\tb", "/?q=\f", "/a\x01", "/?q=\x7f", "/caf\xc3\xa9", "/?q=\xc3\xa9",
        "/?q=\x80", "/?q=\xff", "/?q=\"x\"", "/?q=<b>", "/a>b", "/\"", "http://h/\t"}) {
    EXPECT_TRUE(refused_every_split("GET " + bad + " HTTP/1.1\r\nHost: h\r\n\r\n", 400)) << bad;
  }
}

TEST(RequestTarget, WhatBrowsersAndCurlSendIsKept) {
  // Raw in queries from browsers (WHATWG query percent-encode set leaves
  // them), raw from curl -g; '|' and '^' raw in paths too.
  for (const std::string good : {"/a|b^c/d?x={y}|z^`\\[]", "/p%20q?r=%C3%A9&s=t+u",
                                 "/a/b.html?x=1#frag", "/~u/!$&'()*+,;=:@", "/a%7Cb"}) {
    const std::string msg = "GET " + good + " HTTP/1.1\r\nHost: h\r\n\r\n";
    std::string m;
    ASSERT_TRUE(same_every_split(msg, &m)) << good;
    EXPECT_EQ(m, "GET " + good + " 1.1 ka @" + std::to_string(msg.size()) + "|Host:h");
  }
}

TEST(RequestTarget, AbsoluteFormIsServedByItsPath) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"GET http://example.com/a/b?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
       "GET /a/b?x=1 1.1 ka|Host:example.com"},
      // The target's authority replaces Host (RFC 9112 3.2.2).
      {"GET HTTP://Other.Example:8080/a HTTP/1.1\r\nHost: h\r\n\r\n",
       "GET /a 1.1 ka|Host:Other.Example:8080"},
      {"HEAD https://h HTTP/1.1\r\nHost: h\r\n\r\n", "HEAD / 1.1 ka|Host:h"},
      {"GET http://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n", "GET /?q=1 1.1 ka|Host:h"},
      {"GET http://[::1]:33000/x HTTP/1.1\r\nhost: [::1]:33000\r\n\r\n",
       "GET /x 1.1 ka|host:[::1]:33000"},
      {"GET http://127.0.0.1:/x HTTP/1.1\r\nHost: h\r\n\r\n", "GET /x 1.1 ka|Host:127.0.0.1:"},
      // HTTP/1.0 may omit Host: the authority becomes it.
      {"GET http://h:1/x HTTP/1.0\r\n\r\n", "GET /x 1.0 close|Host:h:1"},
      {"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", "OPTIONS * 1.1 ka|Host:h"},
      {"OPTIONS http://h HTTP/1.1\r\nHost: h\r\n\r\n", "OPTIONS / 1.1 ka|Host:h"},
      // Authority-form stays CONNECT's (the daemons answer 405 and close).
      {"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", "CONNECT h:443 1.1 close|Host:h:443"},
  };
  for (const auto& [msg, want] : cases) {
    std::string m;
    ASSERT_TRUE(same_every_split(msg, &m)) << msg;
    // meaning() puts " @consumed" before the headers.
    const std::string at = " @" + std::to_string(msg.size());
    const size_t bar = want.find('|');
    EXPECT_EQ(m, want.substr(0, bar) + at + want.substr(bar)) << msg;
  }
}

TEST(RequestTarget, OtherFormsAre400) {
  for (const std::string bad : {
           "GET * HTTP/1.1\r\nHost: h\r\n\r\n",  // '*' only with OPTIONS
           "GET *x HTTP/1.1\r\nHost: h\r\n\r\n",
           "GET ftp://h/a HTTP/1.1\r\nHost: h\r\n\r\n",  // only http and https
           "GET httpx://h/a HTTP/1.1\r\nHost: h\r\n\r\n",
           "GET http:///a HTTP/1.1\r\nHost: h\r\n\r\n",  // empty host
           "GET http://:80/a HTTP/1.1\r\nHost: h\r\n\r\n",
           "GET http://u:p@h/a HTTP/1.1\r\nHost: h\r\n\r\n",  // userinfo
           "GET http://h:8x/a HTTP/1.1\r\nHost: h\r\n\r\n",
           "GET http://h:1234567/a HTTP/1.1\r\nHost: h\r\n\r\n",
           "GET http://[zz]/a HTTP/1.1\r\nHost: h\r\n\r\n",
           "GET http://h/a HTTP/1.1\r\n\r\n",  // HTTP/1.1 still needs Host
       }) {
    EXPECT_TRUE(refused_every_split(bad, 400)) << bad;
  }
}

// ---- responses

struct Collected {
  std::string body;
  ResponseParser::BodySink sink() {
    return [this](std::string_view piece) { body.append(piece); };
  }
};

TEST(ResponseParser, ContentLength) {
  const std::string resp =
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
  for (size_t cut = 0; cut <= resp.size(); ++cut) {
    ResponseParser p;
    Collected c;
    p.set_body_sink(c.sink());
    ASSERT_TRUE(feed_in_two(p, resp, cut));
    EXPECT_EQ(p.response().status, 200);
    EXPECT_EQ(p.response().reason, "OK");
    EXPECT_EQ(p.response().content_length, 5u);
    EXPECT_EQ(p.response().header("content-type"), "text/plain");
    EXPECT_TRUE(p.response().keep_alive);
    EXPECT_EQ(c.body, "hello");
    EXPECT_EQ(p.body_bytes(), 5u);
  }
}

TEST(ResponseParser, ChunkedByteByByte) {
  const std::string resp =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
  ResponseParser p;
  Collected c;
  p.set_body_sink(c.sink());
  ParseResult r;
  for (size_t i = 0; i < resp.size(); ++i) {
    r = p.feed(std::string_view(resp).substr(i, 1));
    if (i + 1 < resp.size()) {
      ASSERT_EQ(r.status, ParseStatus::NeedMore) << i;
    }
  }
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_TRUE(p.response().chunked);
  EXPECT_EQ(c.body, "hello, world");
  EXPECT_EQ(p.response().headers.size(), 1u);  // the trailer is not a header
}

TEST(ResponseParser, ReadUntilClose) {
  ResponseParser p;
  Collected c;
  p.set_body_sink(c.sink());
  EXPECT_EQ(p.feed("HTTP/1.1 200 OK\r\n\r\nsome ").status, ParseStatus::NeedMore);
  EXPECT_EQ(p.feed("bytes").status, ParseStatus::NeedMore);
  EXPECT_FALSE(p.response().keep_alive);
  ParseResult r = p.finish();
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(c.body, "some bytes");
  EXPECT_FALSE(p.response().content_length.has_value());
}

TEST(ResponseParser, HeadHasNoBody) {
  ResponseParser p;
  p.expect_no_body(true);
  const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
  ParseResult r = p.feed(resp + "HTTP/1.1 200 OK\r\n");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.consumed, resp.size());
  EXPECT_EQ(p.response().content_length, 1000u);
  EXPECT_TRUE(p.response().keep_alive);
  EXPECT_EQ(p.body_bytes(), 0u);
}

TEST(ResponseParser, HeadWithoutContentLengthKeepsAlive) {
  ResponseParser p;
  p.expect_no_body(true);
  ASSERT_EQ(p.feed("HTTP/1.1 200 OK\r\n\r\n").status, ParseStatus::Complete);
  EXPECT_TRUE(p.response().keep_alive);
}

TEST(ResponseParser, NoBodyStatuses) {
  for (const char* resp :
       {"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n",
        "HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.1 304 Not Modified\r\n\r\n"}) {
    ResponseParser p;
    ParseResult r = p.feed(resp);
    ASSERT_EQ(r.status, ParseStatus::Complete) << resp;
    EXPECT_EQ(r.consumed, std::string_view(resp).size());
    EXPECT_TRUE(p.response().keep_alive) << resp;
  }
}

TEST(ResponseParser, InterimResponsesAreSkipped) {
  ResponseParser p;
  Collected c;
  p.set_body_sink(c.sink());
  ParseResult r = p.feed(
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(p.response().status, 200);
  EXPECT_EQ(p.response().headers.size(), 1u);
  EXPECT_EQ(c.body, "ok");
}

TEST(ResponseParser, TruncatedBodyIsError) {
  {
    ResponseParser p;
    EXPECT_EQ(p.feed("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").status,
              ParseStatus::NeedMore);
    EXPECT_EQ(p.finish().status, ParseStatus::Error);
  }
  {
    ResponseParser p;
    EXPECT_EQ(p.feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab").status,
              ParseStatus::NeedMore);
    EXPECT_EQ(p.finish().status, ParseStatus::Error);
  }
  {
    ResponseParser p;
    EXPECT_EQ(p.feed("HTTP/1.1 200 OK\r\nContent-").status, ParseStatus::NeedMore);
    ParseResult r = p.finish();
    EXPECT_EQ(r.status, ParseStatus::Error);
    EXPECT_FALSE(r.reason.empty());
  }
  {
    ResponseParser p;
    EXPECT_EQ(p.finish().status, ParseStatus::Error);  // closed before any byte
  }
}

TEST(ResponseParser, FinishAfterCompleteIsComplete) {
  ResponseParser p;
  ASSERT_EQ(p.feed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").status, ParseStatus::Complete);
  EXPECT_EQ(p.finish().status, ParseStatus::Complete);
}

TEST(ResponseParser, KeepAliveAndConnectionClose) {
  ResponseParser p;
  ASSERT_EQ(p.feed("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").status,
            ParseStatus::Complete);
  EXPECT_FALSE(p.response().keep_alive);
  p.reset();
  ASSERT_EQ(p.feed("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").status, ParseStatus::Complete);
  EXPECT_FALSE(p.response().keep_alive);
  EXPECT_EQ(p.response().version_minor, 0);
}

TEST(ResponseParser, ObsFoldBecomesSpace) {
  ResponseParser p;
  ASSERT_EQ(p.feed("HTTP/1.1 200 OK\r\nX: a\r\n  b\r\nY: c\r\nContent-Length: 0\r\n\r\n").status,
            ParseStatus::Complete);
  EXPECT_EQ(p.response().header("x"), "a b");
  EXPECT_EQ(p.response().header("y"), "c");
}

TEST(ResponseParser, ObsFoldAfterBareLfAnySplit) {
  // Found by the fuzzer: fold detection once depended on where reads ended.
  const std::string resp = "HTTP/1.1 200 OK\r\nX-F: a\n  b\r\n\tc\r\nContent-Length: 0\r\n\r\n";
  for (size_t cut = 0; cut < resp.size(); ++cut) {
    ResponseParser p;
    ASSERT_TRUE(feed_in_two(p, resp, cut));
    EXPECT_EQ(p.response().header("x-f"), "a b c") << cut;
  }
}

TEST(ResponseParser, EmptyValueThenWhitespaceFoldEndsTheName) {
  // Found by the 10M-run fuzzer: "X-F:" with an empty value and a fold of only
  // whitespace once glued the next field's name onto "X-F", on one split only.
  const std::string resp = "HTTP/1.1 200 OK\r\nX-F:\r\n   \nY-G: v\r\nContent-Length: 0\r\n\r\n";
  for (size_t cut = 0; cut <= resp.size(); ++cut) {
    ResponseParser p;
    ASSERT_TRUE(feed_in_two(p, resp, cut));
    ASSERT_EQ(p.response().headers.size(), 3u) << cut;
    EXPECT_EQ(p.response().headers[0].name, "X-F") << cut;
    EXPECT_EQ(p.response().header("y-g"), "v") << cut;
  }
}

TEST(ResponseParser, HeadEndsWhereHttpParserEndsIt) {
  // The non-strict http-parser ends a head at a CR that begins a line and
  // takes the byte after it as the LF, whatever it is. The body after such an
  // end ("\n\tb" looks like a fold, "\n\n" like a head's end) is body.
  const std::string resp = "HTTP/1.1 200 OK\r\nX: a\r\nContent-Length: 7\r\n\rZ1\n\tb\n\n2Q";
  for (size_t cut = 0; cut + 1 < resp.size(); ++cut) {
    ResponseParser p;
    Collected c;
    p.set_body_sink(c.sink());
    ParseResult r;
    ASSERT_TRUE(feed_in_two(p, resp, cut, &r));
    EXPECT_EQ(r.consumed, resp.size() - cut - 1) << cut;  // the Q is not this response's
    EXPECT_EQ(p.response().header("x"), "a") << cut;
    EXPECT_EQ(c.body, "1\n\tb\n\n2") << cut;
  }
}

TEST(ResponseParser, FoldAfterInterimAnySplit) {
  // The interim head ends leniently ("\r\r"); the final head's fold is still
  // seen as one, wherever the reads end.
  const std::string resp =
      "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\r"
      "HTTP/1.1 200 OK\r\nX: a\r\n\tb\r\nContent-Length: 2\r\n\r\nok";
  for (size_t cut = 0; cut < resp.size(); ++cut) {
    ResponseParser p;
    Collected c;
    p.set_body_sink(c.sink());
    ASSERT_TRUE(feed_in_two(p, resp, cut));
    EXPECT_EQ(p.response().status, 200) << cut;
    EXPECT_EQ(p.response().header("x"), "a b") << cut;
    EXPECT_EQ(c.body, "ok") << cut;
  }
}

TEST(ResponseParser, PipelinedResponsesEndWhereTheyEnd) {
  // Fed the rest of the buffer after each one (as the fuzzer does), every
  // response reports exactly its own bytes, lenient head ends included.
  const std::vector<std::string> parts = {"HTTP/1.1 204 No Content\r\nA: 1\r\n\r\r",
                                          "HTTP/1.1 200 OK\nContent-Length: 1\n\nx",
                                          "HTTP/1.1 304 Not Modified\r\n\r\n"};
  std::string all;
  for (const auto& part : parts) all += part;
  ResponseParser p;
  std::string_view rest = all;
  for (const auto& part : parts) {
    const ParseResult r = p.feed(rest);
    ASSERT_EQ(r.status, ParseStatus::Complete) << part;
    EXPECT_EQ(r.consumed, part.size()) << part;
    rest.remove_prefix(r.consumed);
    p.reset();
  }
  EXPECT_TRUE(rest.empty());
}

TEST(ResponseParser, SplitValueIsNotAFold) {
  const std::string resp = "HTTP/1.1 200 OK\r\nX-Value: abcdef\r\nContent-Length: 0\r\n\r\n";
  for (size_t cut = 0; cut < resp.size(); ++cut) {
    ResponseParser p;
    ASSERT_TRUE(feed_in_two(p, resp, cut));
    EXPECT_EQ(p.response().header("x-value"), "abcdef") << cut;
  }
}

TEST(ResponseParser, HeaderLimits) {
  Limits l;
  l.max_header_bytes = 100;
  {
    ResponseParser p(l);
    ParseResult r = p.feed("HTTP/1.1 200 OK\r\nX: " + std::string(200, 'a') + "\r\n\r\n");
    EXPECT_EQ(r.status, ParseStatus::Error);
    EXPECT_FALSE(r.reason.empty());
  }
  l.max_headers = 2;
  {
    ResponseParser p(l);
    EXPECT_EQ(p.feed("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n").status, ParseStatus::Error);
  }
}

TEST(ResponseParser, MalformedIsError) {
  for (const char* resp : {"HTTP/1.1 2000 OK\r\n\r\n", "HTTX/1.1 200 OK\r\n\r\n",
                           "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                           "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                           "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n"}) {
    ResponseParser p;
    EXPECT_EQ(p.feed(resp).status, ParseStatus::Error) << resp;
    EXPECT_EQ(p.feed("more").status, ParseStatus::Error);
  }
}

TEST(ResponseParser, StatusBelow100IsError) {
  // Found by the fuzzer: http-parser takes "HTTP/1.0 2" as status 2.
  ResponseParser p;
  EXPECT_EQ(p.feed("HTTP/1.0 2\r\n\r\nold server").status, ParseStatus::Error);
}

TEST(ResponseParser, ThrowingSinkIsError) {
  ResponseParser p;
  p.set_body_sink([](std::string_view) { throw std::runtime_error("disk full"); });
  EXPECT_EQ(p.feed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab").status, ParseStatus::Error);
}

TEST(ResponseParser, ResetForNextResponseKeepsSink) {
  ResponseParser p;
  Collected c;
  p.set_body_sink(c.sink());
  const std::string one = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na";
  const std::string two = "HTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nb";
  const std::string buf = one + two;
  ParseResult r = p.feed(buf);
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.consumed, one.size());
  p.reset();
  r = p.feed(std::string_view(buf).substr(one.size()));
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(p.response().status, 404);
  EXPECT_EQ(p.response().reason, "Not Found");
  EXPECT_EQ(c.body, "ab");
}

// The origin client and the prober read chunked framing as strictly as the
// server does: http-parser took any two bytes after chunk data as its CRLF
// and junk after the size as an extension.
TEST(ResponseParser, LenientChunkedFramingIsError) {
  const std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const std::string body : {
           "5\r\nabcdeXY0\r\n\r\n",
           "5\r\nabcde\n0\r\n\r\n",
           "5 x\r\nabcde\r\n0\r\n\r\n",
           "5;\nabcde\r\n0\r\n\r\n",
           "10000000000000000\r\n",  // 17 digits: would overflow 64 bits
           "ffffffffffffffff0\r\n",
           "0\r\nX: a\r\n folded\r\n\r\n",
           "0\r\nX: a\nY: b\r\n\r\n",
       }) {
    const std::string resp = head + body;
    for (size_t cut = 0; cut <= resp.size(); ++cut) {
      ResponseParser p;
      ParseResult r = p.feed(std::string_view(resp).substr(0, cut));
      if (r.status == ParseStatus::NeedMore) r = p.feed(std::string_view(resp).substr(cut));
      if (r.status == ParseStatus::NeedMore) r = p.finish();
      ASSERT_EQ(r.status, ParseStatus::Error) << body << " cut " << cut;
      EXPECT_FALSE(r.reason.empty());
    }
  }
}

TEST(ResponseParser, ChunkedWithExtensionsAndTrailersEndsWhereItEnds) {
  const std::string resp =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5 ;a=\"b c\"\r\nhello\r\n0007\r\n, world\r\n0\r\nT: x\r\n\r\n";
  const std::string next = "HTTP/1.1 204 No Content\r\n\r\n";
  const std::string both = resp + next;
  for (size_t cut = 0; cut <= both.size(); ++cut) {
    ResponseParser p;
    Collected c;
    p.set_body_sink(c.sink());
    ParseResult r = p.feed(std::string_view(both).substr(0, cut));
    size_t at = r.consumed;
    if (r.status == ParseStatus::NeedMore) {
      r = p.feed(std::string_view(both).substr(cut));
      at = cut + r.consumed;
    }
    ASSERT_EQ(r.status, ParseStatus::Complete) << "cut " << cut << " " << r.reason;
    EXPECT_EQ(at, resp.size());
    EXPECT_EQ(c.body, "hello, world");
    EXPECT_TRUE(p.response().keep_alive);
  }
}

}  // namespace
}  // namespace cdn::http
