// SPDX-License-Identifier: MIT
// cdn-get's reading of a redirect: which URLs it may try. The balancer's own
// answers must pass whole; nothing else may send the client to a host the
// balancer did not name.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "client/url.hpp"

namespace cdn::get {
namespace {

// Throws on a bad URL: also used for the constants below, before any test.
Url url(const std::string& text) {
  Url u;
  std::string err;
  if (!parse_url(text, u, err)) throw std::invalid_argument(err);
  return u;
}

const Url kBalancer = url("http://127.0.0.1:33000/missing?x");
const Url kReplica = url("http://10.0.0.2:33000/dir");

std::vector<std::string> urls(const RedirectTargets& t) {
  std::vector<std::string> out;
  for (const Url& u : t.urls)
    out.push_back((u.tls ? "https://" : "http://") + u.authority() + u.target);
  return out;
}

using Strings = std::vector<std::string>;

TEST(RedirectTargets, TheBalancersAnswerIsTakenWhole) {
  const auto t = redirect_targets(kBalancer, true, "http://10.0.0.2:33000/a%20b?v=2",
                                  "http://10.0.0.3:33000/a%20b?v=2, http://[::1]:8080/a%20b?v=2");
  EXPECT_EQ(urls(t), (Strings{"http://10.0.0.2:33000/a%20b?v=2", "http://10.0.0.3:33000/a%20b?v=2",
                              "http://[::1]:8080/a%20b?v=2"}));
  EXPECT_EQ(t.ignored, 0u);
  EXPECT_EQ(t.first_problem, "");
}

TEST(RedirectTargets, ListSyntaxAllowsSpacesTabsAndEmptyElements) {
  const auto t =
      redirect_targets(kBalancer, true, "http://a:1/p", " ,http://b:2/p ,\t, http://c/p\t,");
  EXPECT_EQ(urls(t), (Strings{"http://a:1/p", "http://b:2/p", "http://c:80/p"}));
  EXPECT_EQ(t.ignored, 0u);
}

TEST(RedirectTargets, NoFallbackHeader) {
  const auto t = redirect_targets(kBalancer, true, "http://a:1/p", std::nullopt);
  EXPECT_EQ(urls(t), (Strings{"http://a:1/p"}));
  EXPECT_EQ(t.ignored, 0u);
}

// Issue 13: an old balancer copied the query raw, so
// GET /missing?x,http://attacker:9/p gave the list below. Every URL that the
// comma made is left out: none has the Location's target.
TEST(RedirectTargets, UrlsSlippedInThroughTheQueryAreLeftOut) {
  const auto t = redirect_targets(
      kBalancer, true, "http://r1:1/missing?x,http://attacker:9/p",
      "http://r2:1/missing?x,http://attacker:9/p, http://r3:1/missing?x,http://attacker:9/p");
  EXPECT_EQ(urls(t), (Strings{"http://r1:1/missing?x,http://attacker:9/p"}));
  EXPECT_EQ(t.ignored, 4u);
  EXPECT_NE(t.first_problem.find("not the Location's resource"), std::string::npos)
      << t.first_problem;
  // Even a URL crafted to look like the resource differs from the Location's
  // target, which holds it.
  const auto u = redirect_targets(kBalancer, true, "http://r1:1/p?,http://attacker:9/p?",
                                  "http://r2:1/p?,http://attacker:9/p?");
  EXPECT_EQ(urls(u), (Strings{"http://r1:1/p?,http://attacker:9/p?"}));
  EXPECT_EQ(u.ignored, 2u);
}

TEST(RedirectTargets, FallbacksMustBeAbsoluteHttpUrlsOfTheSameResource) {
  const auto t = redirect_targets(kBalancer, true, "http://a:1/p?q",
                                  "/p?q, ftp://b/p?q, b:2/p?q, http://b:2/other, http://b:2/p,"
                                  "http://b:2/p?q#f, http://:2/p?q, http://b:99999/p?q, "
                                  "http://b:2/p?q%, http://b:2/p?q\x80, http://b:2/p?q\"");
  EXPECT_EQ(urls(t), (Strings{"http://a:1/p?q"}));
  EXPECT_EQ(t.ignored, 11u);
  EXPECT_NE(t.first_problem.find("'/p?q' is not an absolute http:// or https:// URL"),
            std::string::npos)
      << t.first_problem;
}

TEST(RedirectTargets, ABadLocationTakesTheFallbacksWithIt) {
  // Without a Location there is no resource to hold the fallbacks to.
  for (const char* loc : {"http://a:1/p q", "http://a:1/p\x80", "ftp://a/p", "//evil:9/p",
                          "http://a:1/p#frag", "http://a:1/p%zz", ""}) {
    const auto t = redirect_targets(kBalancer, true, loc, "http://b:2/p, http://c:3/p");
    EXPECT_TRUE(t.urls.empty()) << loc;
    EXPECT_EQ(t.ignored, 3u) << loc;
  }
  const auto t = redirect_targets(kBalancer, true, std::nullopt, "http://b:2/p");
  EXPECT_TRUE(t.urls.empty());
  EXPECT_EQ(t.ignored, 1u);
}

TEST(RedirectTargets, ARelativeLocationStaysOnTheHostAsked) {
  const auto t = redirect_targets(kReplica, false, "/dir/?v=1", std::nullopt);
  EXPECT_EQ(urls(t), (Strings{"http://10.0.0.2:33000/dir/?v=1"}));
  EXPECT_EQ(t.ignored, 0u);
  const auto b = redirect_targets(kBalancer, true, "/elsewhere", std::nullopt);
  EXPECT_EQ(urls(b), (Strings{"http://127.0.0.1:33000/elsewhere"}));
}

TEST(RedirectTargets, AReplicaMayOnlySendTheClientToItself) {
  const auto same = redirect_targets(kReplica, false, "http://10.0.0.2:33000/dir/", std::nullopt);
  EXPECT_EQ(urls(same), (Strings{"http://10.0.0.2:33000/dir/"}));
  const auto other = redirect_targets(kReplica, false, "http://10.0.0.9:33000/dir/", std::nullopt);
  EXPECT_TRUE(other.urls.empty());
  EXPECT_EQ(other.ignored, 1u);
  EXPECT_NE(other.first_problem.find("not the balancer"), std::string::npos);
  const auto port = redirect_targets(kReplica, false, "http://10.0.0.2:9/dir/", std::nullopt);
  EXPECT_TRUE(port.urls.empty());
  // A replica names no fallbacks, not even of its own resource.
  const auto fb = redirect_targets(kReplica, false, "/dir/", "http://10.0.0.9:33000/dir/");
  EXPECT_EQ(urls(fb), (Strings{"http://10.0.0.2:33000/dir/"}));
  EXPECT_EQ(fb.ignored, 1u);
}

TEST(RedirectTargets, AtMost64Fallbacks) {
  std::string list;
  for (int i = 0; i < 70; ++i) list += "http://10.0.1." + std::to_string(i) + ":1/p, ";
  const auto t = redirect_targets(kBalancer, true, "http://a:1/p", list);
  EXPECT_EQ(t.urls.size(), 1 + kMaxFallbacks);
  EXPECT_EQ(t.ignored, 70 - kMaxFallbacks);
}

TEST(RedirectTargets, ProblemsAreQuotedForATerminal) {
  const auto t = redirect_targets(kBalancer, true, "http://a:1/p",
                                  "http://b:2/\x1b[31m" + std::string(300, 'x'));
  ASSERT_EQ(t.ignored, 1u);
  EXPECT_EQ(t.first_problem.find('\x1b'), std::string::npos) << t.first_problem;
  EXPECT_NE(t.first_problem.find("\\x1b[31m"), std::string::npos) << t.first_problem;
  EXPECT_LT(t.first_problem.size(), 250u) << t.first_problem;
}

TEST(ParseUrl, Forms) {
  Url u = url("http://[::1]:8080/x?y");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 8080);
  EXPECT_EQ(u.target, "/x?y");
  EXPECT_EQ(u.authority(), "[::1]:8080");
  u = url("http://example.org");
  EXPECT_EQ(u.port, 80);
  EXPECT_EQ(u.target, "/");
  std::string err;
  for (const char* bad : {"ftp://a/", "https:///x", "http:///x", "http://a:0/", "http://a:x/",
                          "http://[::1/", "http://a/b c"}) {
    EXPECT_FALSE(parse_url(bad, u, err)) << bad;
  }
}

}  // namespace
}  // namespace cdn::get

namespace cdn::get {
namespace {

TEST(ParseUrl, Https) {
  const Url u = url("https://cdn.example/a?b");
  EXPECT_TRUE(u.tls);
  EXPECT_EQ(u.port, 443);
  EXPECT_EQ(u.host, "cdn.example");
  EXPECT_EQ(u.target, "/a?b");
  EXPECT_EQ(url("https://[::1]:8443/").port, 8443);
  EXPECT_FALSE(url("http://h/").tls);
  Url bad;
  std::string err;
  EXPECT_FALSE(parse_url("ftp://h/", bad, err));
  EXPECT_EQ(err, "'ftp://h/': only http:// and https:// URLs are supported");
}

// Over TLS the download stays on TLS: the balancer may send https:// URLs,
// never http:// ones; a plain balancer may send either.
TEST(RedirectTargets, ADownloadStartedOverTlsStaysOnIt) {
  const Url tls_balancer = url("https://b.example/f");
  const auto t = redirect_targets(tls_balancer, true, "https://r1.example:8443/f",
                                  "http://r2.example/f, https://r3.example/f");
  EXPECT_EQ(urls(t), (Strings{"https://r1.example:8443/f", "https://r3.example:443/f"}));
  EXPECT_EQ(t.ignored, 1u);
  EXPECT_NE(t.first_problem.find("is not https://"), std::string::npos) << t.first_problem;
  const auto down = redirect_targets(tls_balancer, true, "http://r1.example/f", std::nullopt);
  EXPECT_TRUE(down.urls.empty());
  const auto up =
      redirect_targets(kBalancer, true, "https://r1.example/missing?x", "http://r2:1/missing?x");
  EXPECT_EQ(urls(up), (Strings{"https://r1.example:443/missing?x", "http://r2:1/missing?x"}));
  // A replica redirecting to itself keeps its scheme.
  const Url tls_replica = url("https://r1.example/dir");
  EXPECT_EQ(urls(redirect_targets(tls_replica, false, "/dir/", std::nullopt)),
            (Strings{"https://r1.example:443/dir/"}));
  EXPECT_TRUE(redirect_targets(tls_replica, false, "http://r1.example:443/dir/", std::nullopt)
                  .urls.empty());
}

}  // namespace
}  // namespace cdn::get
