// SPDX-License-Identifier: MIT
// [site NAME] sections (common/config/settings) and the Host -> site map
// (common/config/site_map).
#include <gtest/gtest.h>

#include <string>

#include "common/config/ini.hpp"
#include "common/config/settings.hpp"
#include "common/config/site_map.hpp"

namespace cdn::config {
namespace {

ReplicaSettings replica(const std::string& text) {
  ReplicaSettings r = replica_settings(parse_ini(text, "/etc/cdn/r.ini"));
  validate(r, "/etc/cdn/r.ini");
  return r;
}

std::string error_of(const std::string& text) {
  try {
    (void)replica(text);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no config::Error for\n" << text;
  return {};
}

::testing::AssertionResult Contains(const std::string& haystack, const std::string& needle) {
  if (haystack.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "'" << haystack << "' does not contain '" << needle << "'";
}

TEST(HostKey, PortCaseAndTrailingDot) {
  EXPECT_EQ(host_key("A.Example:8080"), "a.example");
  EXPECT_EQ(host_key("a.example."), "a.example");
  EXPECT_EQ(host_key("a.example.:80"), "a.example");
  EXPECT_EQ(host_key(" www.b.example "), "www.b.example");
  EXPECT_EQ(host_key("[::1]:33000"), "[::1]");
  EXPECT_EQ(host_key("[FE80::1]"), "[fe80::1]");
  EXPECT_EQ(host_key("127.0.0.1:1"), "127.0.0.1");
}

TEST(HostKey, Malformed) {
  for (const char* bad :
       {"", ":80", "a.example:", "a.example:8x", "a b", "a/b", "u@a.example", "[::1", "[]",
        "[::1]x", "[::1]:", "[zz]", "a.example:123456", ".", "a.example:80:80"}) {
    EXPECT_FALSE(host_key(bad)) << bad;
  }
  EXPECT_FALSE(host_key(std::string(300, 'a')));
}

TEST(SiteMap, FindsByHostWithoutPortOrCase) {
  SiteMap m;
  EXPECT_TRUE(m.add("a.example", 0));
  EXPECT_TRUE(m.add("www.a.example", 0));
  EXPECT_TRUE(m.add("b.example", 1));
  EXPECT_FALSE(m.add("B.example", 2));  // taken
  EXPECT_FALSE(m.add("a b", 2));
  EXPECT_EQ(m.size(), 3u);
  EXPECT_EQ(m.find("A.EXAMPLE:33000"), 0u);
  EXPECT_EQ(m.find("www.a.example"), 0u);
  EXPECT_EQ(m.find("b.example."), 1u);
  EXPECT_FALSE(m.find("c.example"));
  EXPECT_FALSE(m.find(""));
  EXPECT_FALSE(m.find("a.example/x"));
  EXPECT_TRUE(m.names("b.example:1"));
  EXPECT_FALSE(m.names("c.example"));
}

TEST(SiteMap, DefaultTakesOtherHostsOnly) {
  SiteMap m;
  m.add("a.example", 1);
  m.set_default(0);
  EXPECT_EQ(m.find("a.example"), 1u);
  EXPECT_EQ(m.find("other.example"), 0u);
  EXPECT_EQ(m.find(""), 0u);  // HTTP/1.0 without Host
  EXPECT_FALSE(m.names("other.example"));
}

TEST(Sites, SingleContentIsTheDefaultSite) {
  const ReplicaSettings r = replica("[content]\nroot = /srv/www\n");
  EXPECT_TRUE(r.sites.empty());
  EXPECT_TRUE(has_default_site(r));
}

TEST(Sites, SectionsWithHostsAndInheritedKeys) {
  const ReplicaSettings r = replica(
      "[site b]\nhosts = B.example, www.b.example\norigin = http://127.0.0.1:9000\n"
      "max_age = 5m\n"
      "[content]\nmax_age = 2m\ncache_dir = cache\ndefault_ttl = 10s\n"
      "[site a]\nhosts = a.example\nroot = a-files\n");
  EXPECT_FALSE(has_default_site(r));
  ASSERT_EQ(r.sites.size(), 2u);
  const SiteSettings& b = r.sites[0];
  EXPECT_EQ(b.name, "b");
  EXPECT_EQ(b.hosts, (std::vector<std::string>{"b.example", "www.b.example"}));
  EXPECT_EQ(b.content.origin, "http://127.0.0.1:9000/");
  EXPECT_EQ(b.content.max_age, std::chrono::minutes(5));
  // From [content], though [content] comes later in the file.
  EXPECT_EQ(b.content.default_ttl, std::chrono::seconds(10));
  EXPECT_EQ(b.content.cache_dir, "/etc/cdn/cache");
  EXPECT_EQ(site_cache_dir(b), "/etc/cdn/cache/sites/b");
  const SiteSettings& a = r.sites[1];
  EXPECT_EQ(a.content.root, "/etc/cdn/a-files");
  EXPECT_EQ(a.content.max_age, std::chrono::minutes(2));
  EXPECT_TRUE(a.content.origin.empty());
}

TEST(Sites, ContentWithASourceBesideSitesIsTheDefault) {
  const ReplicaSettings r =
      replica("[content]\nroot = /srv/www\n[site a]\nhosts = a.example\npage = /srv/a.html\n");
  EXPECT_TRUE(has_default_site(r));
  ASSERT_EQ(r.sites.size(), 1u);
  EXPECT_TRUE(r.sites[0].content.root.empty());  // not inherited: a source of its own
  EXPECT_EQ(r.sites[0].content.page, "/srv/a.html");
}

TEST(Sites, Refused) {
  EXPECT_TRUE(Contains(error_of("[site a]\nroot = /x\n"), "[site a]: no hosts"));
  EXPECT_TRUE(Contains(error_of("[site a]\nhosts = a.example\n"),
                       "[site a]: set exactly one of root, page or origin (none is set)"));
  EXPECT_TRUE(Contains(error_of("[site a]\nhosts = a.example:80\nroot = /x\n"),
                       "r.ini:2: [site a] hosts: 'a.example:80' is not a host name"));
  EXPECT_TRUE(Contains(error_of("[site a]\nhosts = a.example\nroot = /x\n"
                                "[site b]\nhosts = x.example A.example\nroot = /y\n"),
                       "'a.example' is also a host of [site a]"));
  EXPECT_TRUE(
      Contains(error_of("[site A]\nhosts = a.example\nroot = /x\n"), "'A' is not a site name"));
  EXPECT_TRUE(Contains(error_of("[site default]\nhosts = a.example\nroot = /x\n"),
                       "'default' is [content]'s site"));
  EXPECT_TRUE(
      Contains(error_of("[site a]\nhosts = a.example\nroot = /x\ncapacity = 5\n"), "unknown key"));
  EXPECT_TRUE(Contains(error_of("[site a]\nhosts = a.example\nroot = /x\nhosts = b.example\n"),
                       "set twice"));
  EXPECT_TRUE(Contains(error_of("[site a]\nhosts = ,\nroot = /x\n"), "names no host"));
  // Without sites, [content] must still name its source.
  EXPECT_TRUE(Contains(error_of("[content]\nmax_age = 1m\n"), "[content]: set exactly one"));
}

TEST(Sites, OwnCertificate) {
  const std::string tls = "[tls]\nport = 8443\ncertificate = main.pem\nkey = main.key\n";
  const ReplicaSettings r = replica(tls +
                                    "[site a]\nhosts = a.example\nroot = /x\n"
                                    "certificate = certs/a.pem\nkey = /keys/a.key\n"
                                    "[site b]\nhosts = b.example\nroot = /y\n");
  ASSERT_EQ(r.sites.size(), 2u);
  EXPECT_EQ(r.sites[0].certificate, "/etc/cdn/certs/a.pem");  // beside the file, as [tls]'s
  EXPECT_EQ(r.sites[0].key, "/keys/a.key");
  EXPECT_TRUE(r.sites[1].certificate.empty() && r.sites[1].key.empty());
  // --print-config writes them, and reads back.
  const std::string text = to_ini(r);
  EXPECT_TRUE(Contains(text,
                       "[site a]\nhosts = a.example\ncertificate = /etc/cdn/certs/a.pem\n"
                       "key = /keys/a.key\n"))
      << text;
  EXPECT_EQ(to_ini(replica_settings(parse_ini(text, "/elsewhere/p.ini"))), text);

  EXPECT_TRUE(
      Contains(error_of(tls + "[site a]\nhosts = a.example\nroot = /x\ncertificate = a.pem\n"),
               "r.ini:5: [site a]: certificate without a key (give both, or neither)"));
  EXPECT_TRUE(Contains(error_of(tls + "[site a]\nhosts = a.example\nroot = /x\nkey = a.key\n"),
                       "[site a]: key without a certificate"));
  EXPECT_TRUE(Contains(error_of("[site a]\nhosts = a.example\nroot = /x\ncertificate = a.pem\n"
                                "key = a.key\n"),
                       "[site a] certificate: HTTPS is off (set [tls] port"));
  EXPECT_TRUE(Contains(error_of(tls + "[site a]\nhosts = a.example\nroot = /x\ncertificate =\n"
                                      "key = a.key\n"),
                       "[site a] certificate: must name a file"));
  // [content] has no certificate of its own: the default site's is [tls]'s.
  EXPECT_TRUE(
      Contains(error_of(tls + "[content]\nroot = /x\ncertificate = a.pem\n"), "unknown key"));
}

TEST(Sites, KnownKeysNameTheSection) {
  bool hosts = false, certificate = false, key = false;
  for (const auto& k : replica_keys()) {
    if (k.section == "site NAME" && k.key == "hosts") hosts = true;
    if (k.section == "site NAME" && k.key == "certificate") certificate = true;
    if (k.section == "site NAME" && k.key == "key") key = true;
  }
  EXPECT_TRUE(hosts && certificate && key);
}

TEST(Sites, ToIniRoundTrip) {
  const ReplicaSettings r = replica(
      "[content]\nroot = /srv/www\ncache_dir = /c\n"
      "[site b]\nhosts = b.example www.b.example\norigin = b.internal:8080\nstale_if_error = 1h\n");
  const std::string text = to_ini(r);
  EXPECT_TRUE(Contains(text, "[site b]\nhosts = b.example www.b.example\nroot = \n"));
  EXPECT_TRUE(Contains(text, "origin = http://b.internal:8080/\n"));
  const ReplicaSettings back = replica_settings(parse_ini(text, "/elsewhere/p.ini"));
  EXPECT_EQ(to_ini(back), text);
  ASSERT_EQ(back.sites.size(), 1u);
  EXPECT_EQ(back.sites[0].hosts, r.sites[0].hosts);
  EXPECT_EQ(back.sites[0].content.stale_if_error, std::chrono::hours(1));
  EXPECT_NO_THROW(validate(back, "p.ini"));
}

}  // namespace
}  // namespace cdn::config
