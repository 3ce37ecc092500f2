// SPDX-License-Identifier: MIT
// normalize_path is the one gate between a request-target and the file
// system: every traversal spelling must be refused or resolved inside the root.
#include <gtest/gtest.h>

#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "common/http/path.hpp"

namespace cdn::http {
namespace {

std::string norm(std::string_view t) {
  auto r = normalize_path(t);
  return r ? *r : std::string("<nullopt>");
}

TEST(NormalizePath, NormalCases) {
  EXPECT_EQ(norm("/"), "/");
  EXPECT_EQ(norm("/index.html"), "/index.html");
  EXPECT_EQ(norm("/a/b/c.txt"), "/a/b/c.txt");
  EXPECT_EQ(norm("/a/./b/../c%20d?x=1"), "/a/c d");
  EXPECT_EQ(norm("/a%20b"), "/a b");
  EXPECT_EQ(norm("/caf%C3%A9"), "/caf\xC3\xA9");
  EXPECT_EQ(norm("/a?b/../../x"), "/a");
  EXPECT_EQ(norm("/a#frag/../.."), "/a");
  EXPECT_EQ(norm("/..."), "/...");
  EXPECT_EQ(norm("/a..b/..c"), "/a..b/..c");
  EXPECT_EQ(norm("/a+b"), "/a+b");  // '+' is not a space in a path
}

TEST(NormalizePath, TrailingSlashIsKept) {
  EXPECT_EQ(norm("/a/"), "/a/");
  EXPECT_EQ(norm("/a/b/.."), "/a/");
  EXPECT_EQ(norm("/a/b/../"), "/a/");
  EXPECT_EQ(norm("/a/."), "/a/");
  EXPECT_EQ(norm("/a//"), "/a/");
  EXPECT_EQ(norm("/a/.."), "/");
  EXPECT_EQ(norm("/a/b/"), "/a/b/");
  EXPECT_EQ(norm("/a?x=/"), "/a");
}

TEST(NormalizePath, SlashesAndDots) {
  EXPECT_EQ(norm("//"), "/");
  EXPECT_EQ(norm("//a//b"), "/a/b");
  EXPECT_EQ(norm("/./a"), "/a");
  EXPECT_EQ(norm("/a/./././b"), "/a/b");
  EXPECT_EQ(norm("/a/b/../../c"), "/c");
  EXPECT_EQ(norm("/."), "/");
}

TEST(NormalizePath, TraversalIsRefused) {
  for (const char* t :
       {"/..", "/../", "/../etc/passwd", "/a/../..", "/a/../../etc/passwd", "/%2e%2e/etc/passwd",
        "/%2E%2e/etc/passwd", "/%2e%2E/", "/.%2e/x", "/%2e./x", "/a/..%2f..%2fetc",
        "/a/..%2F..%2Fetc", "/..%2fetc", "/a/b/../../../x", "//..//x", "/./../x", "/%2f..%2f..",
        "/a/%2e%2e/%2e%2e"}) {
    EXPECT_FALSE(normalize_path(t).has_value()) << t;
  }
}

TEST(NormalizePath, TraversalResolvedInsideRoot) {
  EXPECT_EQ(norm("/a/%2e%2e/b"), "/b");
  EXPECT_EQ(norm("/a/b/..%2fc"), "/a/c");
  EXPECT_EQ(norm("/a%2fb"), "/a/b");  // decoded '/' separates segments
}

// The segment-list resolution normalize_path used before it resolved in
// place; the in-place version must agree with it on every input.
std::optional<std::string> reference_resolve(std::string_view decoded) {
  std::vector<std::string_view> segments;
  bool trailing = false;
  size_t pos = 1;
  while (pos <= decoded.size()) {
    size_t slash = decoded.find('/', pos);
    if (slash == std::string_view::npos) slash = decoded.size();
    const std::string_view seg = decoded.substr(pos, slash - pos);
    const bool last = slash == decoded.size();
    if (seg.empty() || seg == ".") {
      trailing = last;
    } else if (seg == "..") {
      if (segments.empty()) return std::nullopt;
      segments.pop_back();
      trailing = last;
    } else {
      segments.push_back(seg);
      trailing = false;
    }
    pos = slash + 1;
  }
  std::string out = "/";
  for (size_t i = 0; i < segments.size(); ++i) {
    if (i != 0) out.push_back('/');
    out.append(segments[i]);
  }
  if (trailing && !segments.empty()) out.push_back('/');
  return out;
}

TEST(NormalizePath, InPlaceResolutionMatchesSegmentList) {
  // Every path of up to 7 pieces over an alphabet rich in separators and
  // dots (long enough to leave the small-string buffer).
  const std::vector<std::string> pieces = {"/", ".", "..", "ab", "ccccccccccccccccc", "."};
  size_t checked = 0;
  std::vector<size_t> idx;
  for (size_t len = 0; len <= 7; ++len) {
    idx.assign(len, 0);
    while (true) {
      std::string path = "/";
      for (size_t i : idx) path += pieces[i];
      EXPECT_EQ(normalize_path(path), reference_resolve(path)) << path;
      ++checked;
      size_t k = 0;
      while (k < len && ++idx[k] == pieces.size()) idx[k++] = 0;
      if (k == len) break;
    }
  }
  EXPECT_GT(checked, 300000u);
}

TEST(NormalizePath, DecodedOnce) {
  // %252e decodes once to the literal name "%2e", never to ".".
  EXPECT_EQ(norm("/%252e%252e/x"), "/%2e%2e/x");
  EXPECT_EQ(norm("/%25"), "/%");
  EXPECT_EQ(norm("/%2525"), "/%25");
}

TEST(NormalizePath, BadBytesAreRefused) {
  EXPECT_FALSE(normalize_path("/a%00b").has_value());
  EXPECT_FALSE(normalize_path(std::string_view("/a\0b", 4)).has_value());
  EXPECT_FALSE(normalize_path("/a%0d%0aX: y").has_value());
  EXPECT_FALSE(normalize_path("/a%1f").has_value());
  EXPECT_FALSE(normalize_path("/a%7f").has_value());
  EXPECT_FALSE(normalize_path("/a\x01").has_value());
  EXPECT_FALSE(normalize_path("/a\\..\\..\\x").has_value());
  EXPECT_FALSE(normalize_path("/a%5c..%5cx").has_value());
  EXPECT_FALSE(normalize_path("/a%5C").has_value());
}

TEST(NormalizePath, BadEscapesAreRefused) {
  for (const char* t : {"/%", "/%2", "/%zz", "/a%2g", "/a%g2", "/%%32%65"}) {
    EXPECT_FALSE(normalize_path(t).has_value()) << t;
  }
}

TEST(NormalizePath, MustStartWithSlash) {
  EXPECT_FALSE(normalize_path("").has_value());
  EXPECT_FALSE(normalize_path("a/b").has_value());
  EXPECT_FALSE(normalize_path("*").has_value());
  EXPECT_FALSE(normalize_path("http://host/a").has_value());
  EXPECT_FALSE(normalize_path("%2fa").has_value());
}

TEST(Query, QueryOf) {
  EXPECT_EQ(query_of("/a?x=1&y=2"), "x=1&y=2");
  EXPECT_EQ(query_of("/a"), "");
  EXPECT_EQ(query_of("/a?"), "");
  EXPECT_EQ(query_of("/a?x=1#frag"), "x=1");
  EXPECT_EQ(query_of("/a?x=?y"), "x=?y");
}

TEST(Query, QueryParam) {
  EXPECT_EQ(query_param("path=/x&y=1", "path"), "/x");
  EXPECT_EQ(query_param("path=/x&y=1", "y"), "1");
  EXPECT_FALSE(query_param("path=/x&y=1", "z").has_value());
  EXPECT_EQ(query_param("path=%2Fa%20b", "path"), "/a b");
  EXPECT_EQ(query_param("q=a+b", "q"), "a b");
  EXPECT_EQ(query_param("q=a%2Bb", "q"), "a+b");
  EXPECT_EQ(query_param("flag&x=1", "flag"), "");
  EXPECT_EQ(query_param("x=&y=2", "x"), "");
  EXPECT_EQ(query_param("x=1&x=2", "x"), "1");  // first wins
  EXPECT_EQ(query_param("&&x=1&", "x"), "1");
  EXPECT_EQ(query_param("my%20key=v", "my key"), "v");
  EXPECT_EQ(query_param("a=b=c", "a"), "b=c");
  EXPECT_FALSE(query_param("x=%zz", "x").has_value());
  EXPECT_FALSE(query_param("", "x").has_value());
  EXPECT_EQ(query_param(query_of("/.cdn/locate?path=/img/a.png"), "path"), "/img/a.png");
}

TEST(Encode, EncodePath) {
  EXPECT_EQ(encode_path("/a/b.html"), "/a/b.html");
  EXPECT_EQ(encode_path("/a b"), "/a%20b");
  EXPECT_EQ(encode_path("/caf\xC3\xA9"), "/caf%C3%A9");
  EXPECT_EQ(encode_path("/a?b#c%"), "/a%3Fb%23c%25");
  EXPECT_EQ(encode_path("/-._~"), "/-._~");
  EXPECT_EQ(encode_path(""), "");
}

TEST(Encode, RoundTripsThroughNormalize) {
  for (const char* p : {"/a b/c", "/caf\xC3\xA9/x?y", "/100%/#hash", "/a+b"}) {
    EXPECT_EQ(norm(encode_path(p)), p) << p;
  }
}

std::string encq(std::string_view q) {
  std::string out = "prefix?";
  append_encoded_query(out, q);
  return out.substr(7);
}

TEST(EncodeQuery, CommonQueriesAreKeptAsTheyAre) {
  for (const char* q : {"", "v=2", "a=1&b=2", "x=%20y%2C", "path=/a/b?c:d@e", "!$&'()*+;=-._~"}) {
    EXPECT_EQ(encq(q), q) << q;
  }
}

struct Encoded {
  std::string_view in, out;
};

TEST(EncodeQuery, Escapes) {
  for (const Encoded& e : std::initializer_list<Encoded>{
           // The attack of issue 13: a ',' in the query ended the Location's
           // URL in CDN-Fallback, and what followed was a URL of the client's
           // choosing.
           {"x,http://127.0.0.1:9/p", "x%2Chttp://127.0.0.1:9/p"},
           {",", "%2C"},
           {",,a,", "%2C%2Ca%2C"},
           // Bytes outside RFC 3986.
           {"a\tb", "a%09b"},
           {"a\fb", "a%0Cb"},
           {std::string_view("a\0b", 3), "a%00b"},
           {"\r\n", "%0D%0A"},
           {"a b", "a%20b"},
           {"\x7f\x80\xff", "%7F%80%FF"},
           {"caf\xC3\xA9", "caf%C3%A9"},
           {"\"<>\\^`{|}#", "%22%3C%3E%5C%5E%60%7B%7C%7D%23"},
           // '%' is kept only before a valid escape.
           {"%41%2c%fF", "%41%2c%fF"},
           {"%", "%25"},
           {"a%", "a%25"},
           {"%4", "%254"},
           {"%zz", "%25zz"},
           {"%%41", "%25%41"},
           {"100%,x", "100%25%2Cx"},
       }) {
    EXPECT_EQ(encq(e.in), e.out) << e.in;
  }
}

TEST(EncodeQuery, AppendsToWhatIsThere) {
  std::string out = "/a?";
  append_encoded_query(out, "b,c");
  EXPECT_EQ(out, "/a?b%2Cc");
}

// Whatever the query, the result is a valid URI query with no ',' and no
// whitespace, and a second pass leaves it as it is.
TEST(EncodeQuery, EveryByteGivesAValidQuery) {
  for (int c = 0; c < 256; ++c) {
    const std::string b(1, static_cast<char>(c));
    for (const std::string& q : {b, "a" + b + "%", b + "%4", b + b + "x,y"}) {
      const std::string e = encq(q);
      EXPECT_TRUE(is_uri_target("/?" + e)) << c;
      EXPECT_EQ(e.find_first_of(", \t\f\r\n"), std::string::npos) << c;
      EXPECT_EQ(encq(e), e) << c;
    }
  }
}

TEST(UriTarget, ValidTargets) {
  for (const char* t : {"/", "/index.html", "/a%20b?x=%2C", "/a?b?c/d",
                        "/a:b@c!$&'()*+,;=", "/-._~", "/?", "//x"}) {
    EXPECT_TRUE(is_uri_target(t)) << t;
  }
}

TEST(UriTarget, InvalidTargets) {
  for (const char* t : {"",    "a",    "http://x/", "/a b",  "/a\tb",  "/a\fb",  "/a#f",
                        "/a%", "/a%4", "/a%zz",     "/\x80", "/a\"b",  "/a<b>",  "/a\\b",
                        "/{}", "/|",   "/^",        "/`",    "/a\x7f", "/?a\x80"}) {
    EXPECT_FALSE(is_uri_target(t)) << t;
  }
  EXPECT_FALSE(is_uri_target(std::string_view("/a\0b", 4)));
}

}  // namespace
}  // namespace cdn::http
