// SPDX-License-Identifier: MIT
// The balancer's Host -> replicas routing (daemons/balancerd/sites) and the
// table's choice among one site's replicas only, under every policy.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "daemons/balancerd/sites.hpp"
#include "daemons/balancerd/table.hpp"

namespace cdn::balancer {
namespace {

const Clock::time_point kT0 = Clock::time_point{} + std::chrono::hours(1);
const Clock::time_point kLater = kT0 + std::chrono::seconds(120);

status::ReplicaStatus serving(std::string sites, std::string hosts) {
  status::ReplicaStatus s;
  s.name = "r";
  s.state = status::State::Serving;
  s.capacity = 1000;
  s.sites = std::move(sites);
  s.hosts = std::move(hosts);
  return s;
}

// Replicas 0 and 1 serve site a, 2 site b, 3 both and a default site.
Table fleet(const std::string& policy) {
  std::vector<config::ReplicaEntry> v;
  for (int i = 0; i < 4; ++i) v.push_back({{"10.0.0." + std::to_string(i + 1), 33000}, 1});
  config::ProbeSettings p;
  p.interval = std::chrono::milliseconds(1000);
  p.timeout = std::chrono::milliseconds(500);
  config::BalanceSettings b;
  b.policy = config::policy_from_string(policy).value();
  Table t(v, p, b, 7);
  const status::ReplicaStatus st[] = {
      serving("a", "a.example www.a.example"), serving("a", "a.example www.a.example"),
      serving("b", "b.example"), serving("default a b", "a.example www.a.example b.example")};
  for (size_t i = 0; i < 4; ++i) {
    for (int k = 0; k < 2; ++k) t.probe_succeeded(i, std::chrono::microseconds(1000), st[i], kT0);
  }
  return t;
}

std::vector<char> mask(const SiteRouter& r, std::string_view host) {
  const auto* m = r.eligible(host);
  return m == nullptr ? std::vector<char>{} : *m;
}

TEST(SiteRouter, HostsFromStatuses) {
  Table t = fleet("p2c");
  SiteRouter r;
  r.rebuild(t.replicas(), t.sites_generation());
  EXPECT_EQ(mask(r, "A.Example:8080"), (std::vector<char>{1, 1, 0, 1}));
  EXPECT_EQ(mask(r, "b.example"), (std::vector<char>{0, 0, 1, 1}));
  // No replica lists it: the default sites' replicas.
  EXPECT_EQ(mask(r, "c.example"), (std::vector<char>{0, 0, 0, 1}));
  EXPECT_EQ(mask(r, ""), (std::vector<char>{0, 0, 0, 1}));
  EXPECT_TRUE(SiteRouter::any(mask(r, "c.example")));
}

TEST(SiteRouter, SiteOfAHostForItsMetrics) {
  std::vector<Replica> replicas(3);
  replicas[0].last_status = serving("a", "a.example www.a.example");
  replicas[0].last_status.host_sites = "a.example=a www.a.example=a";
  replicas[1].last_status = serving("default b", "b.example");
  replicas[1].last_status.host_sites = "b.example=b junk =x y=";
  // From before host_sites: the host stands for its site.
  replicas[2].last_status = serving("c", "c.example");
  SiteRouter r;
  r.rebuild(replicas, 0);
  EXPECT_EQ(r.site_of("WWW.A.example:80"), "a");
  EXPECT_EQ(r.site_of("b.example"), "b");
  EXPECT_EQ(r.site_of("c.example"), "c.example");
  EXPECT_EQ(r.site_of("other.example"), "default");
  EXPECT_EQ(r.site_of(""), "default");
  replicas[1].last_status = serving("b", "b.example");
  r.rebuild(replicas, 1);
  EXPECT_EQ(r.site_of("other.example"), "");  // 421: no replica takes it
  EXPECT_EQ(r.site_of("b.example"), "b.example");
  // A fleet of one site: every request is the default site's.
  std::vector<Replica> plain(2);
  r.rebuild(plain, 2);
  EXPECT_EQ(r.site_of("a.example"), "default");
}

TEST(SiteRouter, NoHostsAnywhereMeansEveryReplica) {
  std::vector<Replica> replicas(3);
  SiteRouter r;
  r.rebuild(replicas, 0);
  EXPECT_EQ(r.eligible("a.example"), nullptr);
}

TEST(SiteRouter, NoDefaultMeansNone) {
  std::vector<Replica> replicas(2);
  replicas[0].last_status = serving("a", "a.example");
  replicas[1].last_status = serving("b", "b.example");
  SiteRouter r;
  r.rebuild(replicas, 0);
  EXPECT_FALSE(SiteRouter::any(mask(r, "c.example")));
}

TEST(SiteRouter, GenerationMovesWithSites) {
  Table t = fleet("p2c");
  const uint64_t g = t.sites_generation();
  t.probe_succeeded(2, std::chrono::microseconds(1000), serving("b", "b.example"), kT0);
  EXPECT_EQ(t.sites_generation(), g);
  t.probe_succeeded(2, std::chrono::microseconds(1000), serving("b", "b.example c.example"), kT0);
  EXPECT_NE(t.sites_generation(), g);
}

TEST(SiteRouter, EveryPolicyChoosesOnlyTheSitesReplicas) {
  for (const char* policy : {"best", "round-robin", "least-loaded", "p2c", "consistent"}) {
    Table t = fleet(policy);
    SiteRouter r;
    r.rebuild(t.replicas(), t.sites_generation());
    const auto* only_b = r.eligible("b.example");
    std::vector<Choice> out;
    for (int k = 0; k < 50; ++k) {
      t.choose("/p" + std::to_string(k), 3, kLater, out, only_b);
      ASSERT_FALSE(out.empty()) << policy;
      for (const auto& c : out) EXPECT_TRUE(c.index == 2 || c.index == 3) << policy;
    }
    t.rank("/x", 4, kLater, out, r.eligible("a.example"));
    ASSERT_EQ(out.size(), 3u) << policy;
    for (const auto& c : out) EXPECT_NE(c.index, 2u) << policy;
    // Without a mask, every replica.
    t.rank("/x", 4, kLater, out);
    EXPECT_EQ(out.size(), 4u) << policy;
  }
}

}  // namespace
}  // namespace cdn::balancer
