// SPDX-License-Identifier: MIT
// The balancer keeps the scheme (daemons/balancerd/scheme): each replica's
// http:// and https:// URL, and which replicas a TLS client may be sent to,
// alone and within a site's replicas; then the table's choice within them.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "daemons/balancerd/scheme.hpp"
#include "daemons/balancerd/table.hpp"

namespace cdn::balancer {
namespace {

Replica replica(std::string host, uint16_t port, std::string public_host = "",
                uint16_t tls_port = 0) {
  Replica r;
  r.address = {std::move(host), port};
  r.public_host = std::move(public_host);
  r.tls_port = tls_port;
  return r;
}

TEST(Scheme, Prefixes) {
  EXPECT_EQ(http_prefix(replica("10.0.0.1", 33000)), "http://10.0.0.1:33000");
  EXPECT_EQ(https_prefix(replica("10.0.0.1", 33000)), "");
  EXPECT_EQ(https_prefix(replica("10.0.0.1", 33000, "", 8443)), "https://10.0.0.1:8443");
  EXPECT_EQ(https_prefix(replica("10.0.0.1", 33000, "cdn1.example", 8443)),
            "https://cdn1.example:8443");
  // The public host is for https:// only: plain clients go to the address.
  EXPECT_EQ(http_prefix(replica("10.0.0.1", 33000, "cdn1.example", 8443)), "http://10.0.0.1:33000");
  EXPECT_EQ(https_prefix(replica("10.0.0.1", 33000, "cdn1.example", 443)), "https://cdn1.example");
  EXPECT_EQ(http_prefix(replica("::1", 80)), "http://[::1]:80");
  EXPECT_EQ(https_prefix(replica("::1", 80, "", 443)), "https://[::1]");
  EXPECT_EQ(https_prefix(replica("fe80::1", 80, "", 8443)), "https://[fe80::1]:8443");
}

TEST(Scheme, PlainClientsKeepTheSiteMask) {
  const std::vector<Replica> rs = {replica("a", 1, "", 443), replica("b", 1)};
  SchemeRouter router;
  const auto all = router.route(rs, nullptr, false, 1);
  EXPECT_EQ(all.only, nullptr);
  EXPECT_FALSE(all.https);
  const std::vector<char> site = {0, 1};
  const auto one = router.route(rs, &site, false, 1);
  EXPECT_EQ(one.only, &site);
  EXPECT_FALSE(one.https);
}

TEST(Scheme, TlsClientsGoToReplicasWithATlsPort) {
  const std::vector<Replica> rs = {replica("a", 1, "", 443), replica("b", 1),
                                   replica("c", 1, "c.example", 8443)};
  SchemeRouter router;
  const auto r = router.route(rs, nullptr, true, 1);
  ASSERT_NE(r.only, nullptr);
  EXPECT_TRUE(r.https);
  EXPECT_EQ(*r.only, (std::vector<char>{1, 0, 1}));
  // Within a site: only its replicas that have one.
  const std::vector<char> site = {0, 1, 1};
  const auto s = router.route(rs, &site, true, 1);
  ASSERT_NE(s.only, nullptr);
  EXPECT_TRUE(s.https);
  EXPECT_EQ(*s.only, (std::vector<char>{0, 0, 1}));
  // A site none of whose replicas has a TLS port: http://, as before.
  const std::vector<char> plain = {0, 1, 0};
  const auto p = router.route(rs, &plain, true, 1);
  EXPECT_EQ(p.only, &plain);
  EXPECT_FALSE(p.https);
  // A site with no replica at all stays empty (the caller answers 421).
  const std::vector<char> none = {0, 0, 0};
  EXPECT_EQ(router.route(rs, &none, true, 1).only, &none);
}

TEST(Scheme, AFleetWithoutTlsPortsSendsTlsClientsToHttp) {
  const std::vector<Replica> rs = {replica("a", 1), replica("b", 1)};
  SchemeRouter router;
  const auto r = router.route(rs, nullptr, true, 1);
  EXPECT_EQ(r.only, nullptr);
  EXPECT_FALSE(r.https);
}

TEST(Scheme, MasksAreRebuiltWhenTheGenerationMoves) {
  std::vector<Replica> rs = {replica("a", 1, "", 443), replica("b", 1)};
  SchemeRouter router;
  EXPECT_EQ(*router.route(rs, nullptr, true, 1).only, (std::vector<char>{1, 0}));
  // A reload gave b a TLS port and dropped a's (the table's generation moves).
  rs[0].tls_port = 0;
  rs[1].tls_port = 8443;
  EXPECT_EQ(*router.route(rs, nullptr, true, 1).only, (std::vector<char>{1, 0}));  // cached
  EXPECT_EQ(*router.route(rs, nullptr, true, 2).only, (std::vector<char>{0, 1}));
  rs.push_back(replica("c", 1, "", 443));
  EXPECT_EQ(*router.route(rs, nullptr, true, 3).only, (std::vector<char>{0, 1, 1}));
}

// The table chooses within the TLS mask: a TLS client is never given a
// replica without a TLS port, not even as a fallback, and when none of
// those is up there is no choice (503) rather than a plain one.
TEST(Scheme, ChoicesAndFallbacksStayOnTls) {
  using std::chrono::milliseconds;
  const Clock::time_point t0 = Clock::time_point{} + std::chrono::hours(1);
  std::vector<config::ReplicaEntry> v;
  for (int i = 0; i < 6; ++i) {
    config::ReplicaEntry e;
    e.address = {"10.0.0." + std::to_string(i + 1), 33000};
    if (i % 2 == 0) e.tls_port = 8443;
    v.push_back(e);
  }
  config::ProbeSettings p;
  p.interval = milliseconds(1000);
  p.timeout = milliseconds(500);
  for (const char* policy : {"best", "round-robin", "least-loaded", "p2c", "consistent"}) {
    config::BalanceSettings b;
    b.policy = config::policy_from_string(policy).value();
    Table t(v, p, b, 7);
    status::ReplicaStatus st;
    st.name = "r";
    st.state = status::State::Serving;
    st.capacity = 1000;
    for (size_t i = 0; i < v.size(); ++i) {
      for (int k = 0; k < 3; ++k) {
        t.probe_succeeded(i, std::chrono::microseconds(500 + 100 * i), st, t0);
      }
    }
    SchemeRouter router;
    const auto route = router.route(t.replicas(), nullptr, true, t.sites_generation());
    ASSERT_TRUE(route.https);
    std::vector<Choice> picks;
    for (int n = 0; n < 50; ++n) {
      t.choose("/f" + std::to_string(n), 3, t0 + milliseconds(n), picks, route.only);
      ASSERT_EQ(picks.size(), 3u) << policy;
      for (const auto& c : picks) EXPECT_NE(t.replicas()[c.index].tls_port, 0) << policy;
    }
    // The TLS replicas go down: nothing for a TLS client, plain ones stay.
    for (size_t i = 0; i < v.size(); i += 2) {
      for (int k = 0; k < 3; ++k) t.probe_failed(i, "refused", t0, Failure::Refused);
    }
    t.choose("/f", 3, t0 + std::chrono::seconds(5), picks, route.only);
    EXPECT_TRUE(picks.empty()) << policy;
    t.choose("/f", 3, t0 + std::chrono::seconds(5), picks, nullptr);
    EXPECT_EQ(picks.size(), 3u) << policy;
  }
}

}  // namespace
}  // namespace cdn::balancer
