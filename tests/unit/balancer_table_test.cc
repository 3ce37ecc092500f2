// SPDX-License-Identifier: MIT
#include "daemons/balancerd/table.hpp"

#include "tests/unit/count_allocations.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace cdn::balancer {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::seconds;

const Clock::time_point kT0 = Clock::time_point{} + std::chrono::hours(1);
// Well after slow start of anything brought up at kT0.
const Clock::time_point kLater = kT0 + seconds(120);

std::vector<config::ReplicaEntry> addrs(size_t n, uint16_t base = 33000,
                                        std::vector<uint32_t> weights = {}) {
  std::vector<config::ReplicaEntry> v;
  for (size_t i = 0; i < n; ++i) {
    v.push_back({{"10.0.0." + std::to_string(i + 1), static_cast<uint16_t>(base)},
                 i < weights.size() ? weights[i] : 1});
  }
  return v;
}

config::ProbeSettings probe_settings(uint32_t rise = 2, uint32_t fall = 2) {
  config::ProbeSettings p;
  p.interval = milliseconds(1000);
  p.timeout = milliseconds(500);
  p.rise = rise;
  p.fall = fall;
  return p;
}

config::BalanceSettings balance_settings(std::string policy, double factor = 1.25) {
  config::BalanceSettings b;
  b.policy = config::policy_from_string(policy).value();
  b.hash_load_factor = factor;
  return b;
}

status::ReplicaStatus serving(double load = 0, uint64_t capacity = 1000,
                              status::State state = status::State::Serving) {
  status::ReplicaStatus s;
  s.name = "r";
  s.state = state;
  s.load = load;
  s.capacity = capacity;
  return s;
}

microseconds ms(double v) { return microseconds(static_cast<int64_t>(v * 1000)); }

// Brings every replica up at kT0 with the given RTTs (rise good probes).
void bring_up(Table& t, const std::vector<double>& rtts_ms, Clock::time_point at = kT0) {
  for (size_t i = 0; i < rtts_ms.size(); ++i) {
    for (uint32_t k = 0; k < 2; ++k) t.probe_succeeded(i, ms(rtts_ms[i]), serving(), at);
  }
}

Table make(size_t n, const std::string& policy, uint64_t seed = 42, double factor = 1.25) {
  return Table(addrs(n), probe_settings(), balance_settings(policy, factor), seed);
}

std::vector<size_t> burst(Table& t, size_t n, std::string_view path = "/",
                          Clock::time_point now = kLater) {
  std::vector<size_t> counts(t.replicas().size(), 0);
  for (size_t k = 0; k < n; ++k) {
    auto c = t.choose(path, 3, now);
    EXPECT_FALSE(c.empty());
    if (!c.empty()) ++counts[c.front().index];
  }
  return counts;
}

// A probe round: every up replica answers, so the load estimates start over.
void probe_all(Table& t, Clock::time_point now) {
  for (size_t i = 0; i < t.replicas().size(); ++i) {
    if (t.replicas()[i].health != Health::Down) t.probe_succeeded(i, ms(1), serving(), now);
  }
}

// ---------------------------------------------------------------- names

TEST(BalancerNames, PolicyRoundTrip) {
  for (Policy p :
       {Policy::Best, Policy::RoundRobin, Policy::LeastLoaded, Policy::P2C, Policy::Consistent}) {
    EXPECT_EQ(policy_from_string(to_string(p)), p);
  }
  EXPECT_EQ(policy_from_string("round-robin"), Policy::RoundRobin);
  EXPECT_EQ(policy_from_string("P2C"), Policy::P2C);
  EXPECT_FALSE(policy_from_string("random"));
  EXPECT_FALSE(policy_from_string(""));
  EXPECT_EQ(to_string(Health::Down), "down");
  EXPECT_EQ(to_string(Health::Up), "up");
  EXPECT_EQ(to_string(Health::Draining), "draining");
}

TEST(BalancerTable, PolicyFromSettings) {
  EXPECT_EQ(make(1, "consistent").policy(), Policy::Consistent);
  EXPECT_EQ(make(1, "least-loaded").policy(), Policy::LeastLoaded);
}

// ---------------------------------------------------------------- health

TEST(BalancerHealth, StartsDownAndRisesAfterRiseGoodProbes) {
  Table t(addrs(1), probe_settings(3, 2), balance_settings("p2c"), 1);
  EXPECT_EQ(t.replicas()[0].health, Health::Down);
  EXPECT_EQ(t.up_count(), 0u);
  t.probe_succeeded(0, ms(1), serving(), kT0);
  t.probe_succeeded(0, ms(1), serving(), kT0 + seconds(1));
  EXPECT_EQ(t.replicas()[0].health, Health::Down);
  EXPECT_TRUE(t.choose("/", 3, kT0 + seconds(1)).empty());
  t.probe_succeeded(0, ms(1), serving(), kT0 + seconds(2));
  EXPECT_EQ(t.replicas()[0].health, Health::Up);
  EXPECT_EQ(t.replicas()[0].up_since, kT0 + seconds(2));
  EXPECT_EQ(t.up_count(), 1u);
}

TEST(BalancerHealth, FailureResetsRiseStreak) {
  Table t(addrs(1), probe_settings(2, 2), balance_settings("p2c"), 1);
  t.probe_succeeded(0, ms(1), serving(), kT0);
  t.probe_failed(0, "timeout", kT0 + seconds(1));
  t.probe_succeeded(0, ms(1), serving(), kT0 + seconds(2));
  EXPECT_EQ(t.replicas()[0].health, Health::Down);  // not two in a row
  t.probe_succeeded(0, ms(1), serving(), kT0 + seconds(3));
  EXPECT_EQ(t.replicas()[0].health, Health::Up);
}

TEST(BalancerHealth, FallsAfterFallConsecutiveFailures) {
  Table t(addrs(1), probe_settings(2, 3), balance_settings("p2c"), 1);
  bring_up(t, {1});
  t.probe_failed(0, "timeout", kT0 + seconds(1));
  t.probe_failed(0, "timeout", kT0 + seconds(2));
  EXPECT_EQ(t.replicas()[0].health, Health::Up);
  t.probe_succeeded(0, ms(1), serving(), kT0 + seconds(3));  // streak broken
  t.probe_failed(0, "timeout", kT0 + seconds(4));
  t.probe_failed(0, "timeout", kT0 + seconds(5));
  EXPECT_EQ(t.replicas()[0].health, Health::Up);
  t.probe_failed(0, "connection refused", kT0 + seconds(6));
  EXPECT_EQ(t.replicas()[0].health, Health::Down);
  EXPECT_EQ(t.replicas()[0].last_error, "connection refused");
  EXPECT_FALSE(t.replicas()[0].up_since);
  EXPECT_TRUE(t.choose("/", 3, kT0 + seconds(6)).empty());
  // And it must rise again.
  t.probe_succeeded(0, ms(1), serving(), kT0 + seconds(7));
  EXPECT_EQ(t.replicas()[0].health, Health::Down);
  t.probe_succeeded(0, ms(1), serving(), kT0 + seconds(8));
  EXPECT_EQ(t.replicas()[0].health, Health::Up);
  EXPECT_TRUE(t.replicas()[0].last_error.empty());
}

TEST(BalancerHealth, DrainingExcludedAtOnceAndBackWhenServing) {
  for (const char* policy : {"best", "round-robin", "least-loaded", "p2c", "consistent"}) {
    SCOPED_TRACE(policy);
    Table t = make(3, policy);
    bring_up(t, {1, 1, 1});
    t.probe_succeeded(1, ms(1), serving(0, 1000, status::State::Draining), kT0 + seconds(1));
    EXPECT_EQ(t.replicas()[1].health, Health::Draining);
    EXPECT_EQ(t.up_count(), 2u);
    for (int k = 0; k < 200; ++k) {
      auto c = t.choose("/path/" + std::to_string(k), 3, kLater);
      ASSERT_EQ(c.size(), 2u);
      for (const auto& ch : c) EXPECT_NE(ch.index, 1u);
    }
    // Serving again: up at once, it had proven itself before draining.
    t.probe_succeeded(1, ms(1), serving(), kLater);
    EXPECT_EQ(t.replicas()[1].health, Health::Up);
    EXPECT_EQ(t.choose("/", 3, kLater).size(), 3u);
  }
}

TEST(BalancerHealth, DrainingFromDownMustStillRise) {
  Table t = make(1, "p2c");
  t.probe_succeeded(0, ms(1), serving(0, 1000, status::State::Draining), kT0);
  EXPECT_EQ(t.replicas()[0].health, Health::Draining);
  t.probe_succeeded(0, ms(1), serving(), kT0 + seconds(1));
  EXPECT_EQ(t.replicas()[0].health, Health::Draining);
  t.probe_succeeded(0, ms(1), serving(), kT0 + seconds(2));
  EXPECT_EQ(t.replicas()[0].health, Health::Up);
}

TEST(BalancerHealth, DrainingReplicaThatStopsAnsweringGoesDown) {
  Table t = make(1, "p2c");
  bring_up(t, {1});
  t.probe_succeeded(0, ms(1), serving(0, 1000, status::State::Draining), kT0 + seconds(1));
  t.probe_failed(0, "refused", kT0 + seconds(2));
  EXPECT_EQ(t.replicas()[0].health, Health::Draining);
  t.probe_failed(0, "refused", kT0 + seconds(3));
  EXPECT_EQ(t.replicas()[0].health, Health::Down);
  // Came back as a new process: must rise.
  t.probe_succeeded(0, ms(1), serving(), kT0 + seconds(4));
  EXPECT_EQ(t.replicas()[0].health, Health::Down);
}

TEST(BalancerHealth, StartingReplicaIsNotUp) {
  Table t = make(1, "p2c");
  for (int k = 0; k < 5; ++k) {
    t.probe_succeeded(0, ms(1), serving(0, 1000, status::State::Starting), kT0 + seconds(k));
  }
  EXPECT_EQ(t.replicas()[0].health, Health::Down);
  bring_up(t, {1}, kT0 + seconds(10));
  EXPECT_EQ(t.replicas()[0].health, Health::Up);
  // Restarted behind our back: down until it has risen again.
  t.probe_succeeded(0, ms(1), serving(0, 1000, status::State::Starting), kT0 + seconds(11));
  EXPECT_EQ(t.replicas()[0].health, Health::Down);
  EXPECT_DOUBLE_EQ(t.replicas()[0].loss, 0.0);  // it answered: not a loss
}

TEST(BalancerHealth, NoneUpGivesEmptyForEveryPolicy) {
  for (const char* policy : {"best", "round-robin", "least-loaded", "p2c", "consistent"}) {
    SCOPED_TRACE(policy);
    Table t = make(3, policy);
    EXPECT_TRUE(t.choose("/", 3, kT0).empty());
    bring_up(t, {1, 1, 1});
    for (size_t i = 0; i < 3; ++i) {
      t.probe_failed(i, "x", kT0 + seconds(1));
      t.probe_failed(i, "x", kT0 + seconds(2));
    }
    EXPECT_EQ(t.up_count(), 0u);
    EXPECT_TRUE(t.choose("/", 3, kT0 + seconds(2)).empty());
    for (const auto& r : t.replicas()) EXPECT_EQ(r.sent_since_probe, 0);
  }
  Table empty(std::vector<config::ReplicaEntry>{}, probe_settings(),
              balance_settings("consistent"));
  EXPECT_TRUE(empty.choose("/", 3, kT0).empty());
}

TEST(BalancerHealth, OutOfRangeProbesIgnored) {
  Table t = make(2, "p2c");
  t.probe_succeeded(7, ms(1), serving(), kT0);
  t.probe_failed(2, "x", kT0);
  EXPECT_EQ(t.up_count(), 0u);
}

// ---------------------------------------------------------------- figures

TEST(BalancerFigures, RttAndLossAreEwmas) {
  Table t = make(1, "p2c");
  t.probe_succeeded(0, ms(10), serving(), kT0);
  EXPECT_DOUBLE_EQ(*t.replicas()[0].rtt_ms, 10.0);  // first sample taken as is
  t.probe_succeeded(0, ms(20), serving(), kT0 + seconds(1));
  EXPECT_NEAR(*t.replicas()[0].rtt_ms, 0.7 * 10 + 0.3 * 20, 1e-9);
  EXPECT_DOUBLE_EQ(t.replicas()[0].loss, 0.0);
  t.probe_failed(0, "x", kT0 + seconds(2));
  EXPECT_NEAR(t.replicas()[0].loss, 0.3, 1e-12);
  t.probe_failed(0, "x", kT0 + seconds(3));
  EXPECT_NEAR(t.replicas()[0].loss, 0.3 * 0.7 + 0.3, 1e-12);
  t.probe_succeeded(0, ms(20), serving(), kT0 + seconds(4));
  EXPECT_NEAR(t.replicas()[0].loss, 0.51 * 0.7, 1e-12);
  EXPECT_NEAR(*t.replicas()[0].rtt_ms, 0.7 * 13 + 0.3 * 20, 1e-9);  // failures leave rtt
}

TEST(BalancerFigures, BaseRttIsTheLowestOfTheLastProbes) {
  Table t = make(1, "p2c");
  t.probe_succeeded(0, ms(10), serving(), kT0);
  EXPECT_DOUBLE_EQ(*t.replicas()[0].base_rtt_ms, 10.0);
  t.probe_succeeded(0, ms(4), serving(), kT0 + seconds(1));
  EXPECT_DOUBLE_EQ(*t.replicas()[0].base_rtt_ms, 4.0);
  // Queueing (slow answers) does not raise it while the 4 ms probe is in the window...
  for (size_t k = 0; k + 1 < kRttWindow; ++k) {
    t.probe_succeeded(0, ms(50), serving(), kT0 + seconds(2 + static_cast<int>(k)));
    EXPECT_DOUBLE_EQ(*t.replicas()[0].base_rtt_ms, 4.0) << k;
  }
  t.probe_failed(0, "x", kT0 + seconds(20));  // failures add no sample
  EXPECT_DOUBLE_EQ(*t.replicas()[0].base_rtt_ms, 4.0);
  // ...a replica that really moved away is farther once it has left.
  t.probe_succeeded(0, ms(60), serving(), kT0 + seconds(21));
  EXPECT_DOUBLE_EQ(*t.replicas()[0].base_rtt_ms, 50.0);
  EXPECT_EQ(t.replicas()[0].recent_rtt_ms.size(), kRttWindow);
}

TEST(BalancerFigures, ScoreGoesByBaseRttNotQueueing) {
  // Two replicas 1 ms away with the same load; one answers a probe late
  // because its link is busy. That is load, already counted: the scores
  // stay equal and p2c keeps splitting evenly (with the EWMA the late one
  // looked 5x farther and got almost nothing).
  Table t = make(2, "p2c", 11);
  bring_up(t, {1, 1});
  t.probe_succeeded(0, ms(1), serving(0.3), kLater);
  t.probe_succeeded(1, ms(30), serving(0.3), kLater);
  t.refresh_scores(kLater);
  EXPECT_DOUBLE_EQ(t.replicas()[0].score, t.replicas()[1].score);
  const auto counts = burst(t, 200);
  EXPECT_NEAR(static_cast<double>(counts[1]), 100.0, 2.0);
}

TEST(BalancerFigures, StatusFiguresRecorded) {
  Table t = make(1, "p2c");
  t.probe_succeeded(0, ms(1), serving(0.25, 400), kT0);
  EXPECT_DOUBLE_EQ(t.replicas()[0].reported_load, 0.25);
  EXPECT_EQ(t.replicas()[0].reported_capacity, 400u);
  EXPECT_EQ(t.replicas()[0].last_probe, kT0);
  EXPECT_EQ(t.replicas()[0].last_status.capacity, 400u);
}

TEST(BalancerFigures, ScoreFormula) {
  Table t = make(1, "p2c");
  t.probe_succeeded(0, ms(9), serving(1.0), kT0);
  t.probe_succeeded(0, ms(9), serving(1.0), kT0);
  auto c = t.choose("/", 1, kLater);
  ASSERT_EQ(c.size(), 1u);
  // (9 + 1) * (1 + 4 * 0) * (1 + 1.0) * 1 = 20, before this client counted.
  EXPECT_NEAR(c[0].score, 20.0, 1e-9);
  // After it: load 1.0 + 1/1000.
  EXPECT_NEAR(t.replicas()[0].score, 10.0 * 2.001, 1e-9);
  // Loss multiplies: one failed probe -> loss 0.3 -> x (1 + 1.2).
  t.probe_failed(0, "x", kLater);
  EXPECT_NEAR(t.replicas()[0].score, 10.0 * 2.2 * 2.001, 1e-9);
}

TEST(BalancerFigures, LowerRttLossAndLoadScoreLower) {
  Table t = make(4, "p2c");
  t.probe_succeeded(0, ms(1), serving(0.1), kT0);   // reference
  t.probe_succeeded(1, ms(20), serving(0.1), kT0);  // farther
  t.probe_succeeded(2, ms(1), serving(0.9), kT0);   // busier
  t.probe_succeeded(3, ms(1), serving(0.1), kT0);
  t.probe_failed(3, "x", kT0);  // lossier
  t.refresh_scores(kLater);
  const auto& r = t.replicas();
  EXPECT_LT(r[0].score, r[1].score);
  EXPECT_LT(r[0].score, r[2].score);
  EXPECT_LT(r[0].score, r[3].score);
}

TEST(BalancerFigures, SentSinceProbeCountsFirstChoiceAndResetsOnProbe) {
  Table t = make(3, "best");
  bring_up(t, {1, 2, 3});
  for (int k = 0; k < 5; ++k) {
    auto c = t.choose("/", 3, kLater);
    ASSERT_EQ(c.size(), 3u);
    EXPECT_EQ(c[0].index, 0u);
  }
  EXPECT_EQ(t.replicas()[0].sent_since_probe, 5);
  EXPECT_EQ(t.replicas()[0].redirects_total, 5u);
  EXPECT_EQ(t.replicas()[1].sent_since_probe, 0);  // fallbacks are not counted
  const double loaded = t.replicas()[0].score;
  t.probe_failed(0, "x", kLater);  // a failed probe says nothing about load
  EXPECT_EQ(t.replicas()[0].sent_since_probe, 5);
  t.probe_succeeded(0, ms(1), serving(0.005), kLater);
  EXPECT_EQ(t.replicas()[0].sent_since_probe, 0);
  EXPECT_EQ(t.replicas()[0].redirects_total, 5u);  // a total, never reset
  EXPECT_LT(t.replicas()[0].score, loaded * 2);
  EXPECT_DOUBLE_EQ(load_estimate(t.replicas()[0]), 0.005);
}

TEST(BalancerFigures, LoadEstimateUsesCapacity) {
  Table t = make(1, "p2c");
  t.probe_succeeded(0, ms(1), serving(0.5, 10), kT0);
  t.probe_succeeded(0, ms(1), serving(0.5, 10), kT0);
  t.choose("/", 1, kLater);
  t.choose("/", 1, kLater);
  EXPECT_DOUBLE_EQ(load_estimate(t.replicas()[0]), 0.7);
  t.probe_succeeded(0, ms(1), serving(0.5, 0), kT0);  // no capacity reported
  t.choose("/", 1, kLater);
  EXPECT_DOUBLE_EQ(load_estimate(t.replicas()[0]), 0.5 + 1.0 / kAssumedCapacity);
}

TEST(BalancerFigures, SlowStartPenaltyRampsDownLinearly) {
  Table t = make(2, "p2c");
  EXPECT_EQ(t.slow_start_window(), Clock::duration(seconds(10)));
  bring_up(t, {1, 1}, kT0);
  // Replica 1 comes up later.
  t.probe_failed(1, "x", kT0);
  t.probe_failed(1, "x", kT0);
  const auto up1 = kT0 + seconds(100);
  for (int k = 0; k < 10; ++k) t.probe_succeeded(1, ms(1), serving(), up1 - seconds(10 - k));
  // Loss back to ~0 and rtt identical; now bring it down and up at up1.
  t.probe_failed(1, "x", up1 - seconds(1));
  t.probe_failed(1, "x", up1 - seconds(1));
  for (int k = 0; k < 40; ++k) t.probe_succeeded(0, ms(1), serving(), up1);
  t.probe_succeeded(1, ms(1), serving(), up1);
  t.probe_succeeded(1, ms(1), serving(), up1);
  ASSERT_EQ(t.replicas()[1].up_since, up1);
  // Equalise the loss EWMAs so only slow start differs.
  for (int k = 0; k < 200; ++k) {
    t.probe_succeeded(0, ms(1), serving(), up1);
    t.probe_succeeded(1, ms(1), serving(), up1);
  }
  auto ratio = [&](Clock::time_point now) {
    t.refresh_scores(now);
    return t.replicas()[1].score / t.replicas()[0].score;
  };
  EXPECT_NEAR(ratio(up1), 1 + kSlowStartPenalty, 1e-6);
  EXPECT_NEAR(ratio(up1 + seconds(5)), 1 + kSlowStartPenalty / 2, 1e-6);
  EXPECT_NEAR(ratio(up1 + milliseconds(7500)), 1 + kSlowStartPenalty / 4, 1e-6);
  EXPECT_NEAR(ratio(up1 + seconds(10)), 1.0, 1e-6);
  EXPECT_NEAR(ratio(up1 + seconds(60)), 1.0, 1e-6);
}

TEST(BalancerFigures, SlowStartWindowFollowsProbeInterval) {
  auto p = probe_settings();
  p.interval = milliseconds(4000);
  Table t(addrs(1), p, balance_settings("p2c"), 1);
  EXPECT_EQ(t.slow_start_window(), Clock::duration(seconds(20)));
}

TEST(BalancerFigures, NewReplicaTakesClientsGraduallyDuringSlowStart) {
  Table t = make(3, "p2c", 7);
  bring_up(t, {1, 1}, kT0);  // replicas 0 and 1 are established
  const auto up2 = kLater;
  t.probe_succeeded(2, ms(1), serving(), up2);
  t.probe_succeeded(2, ms(1), serving(), up2);  // replica 2 just came up
  // Idle peers: it waits (every pair it is in holds an established one).
  auto counts = burst(t, 300, "/", up2);
  EXPECT_LT(counts[2], 10u);
  // Busy peers: it takes clients, more as the window passes.
  auto busy_burst = [&](Clock::time_point now) {
    // Peers at load 2; the new one is small (capacity 100), so each client
    // it takes raises its score visibly.
    t.probe_succeeded(0, ms(1), serving(2.0), now);
    t.probe_succeeded(1, ms(1), serving(2.0), now);
    t.probe_succeeded(2, ms(1), serving(0, 100), now);
    return burst(t, 300, "/", now)[2];
  };
  const size_t early = busy_burst(up2 + seconds(1));
  const size_t mid = busy_burst(up2 + seconds(5));
  const size_t done = busy_burst(up2 + seconds(10));
  EXPECT_GT(early, 0u);
  EXPECT_LT(early, mid);
  EXPECT_LT(mid, done);
  EXPECT_GT(done, 150u);  // no penalty left: the idle one wins its pairs
}

// ---------------------------------------------------------------- policies

TEST(BalancerPolicy, EveryPolicyReturnsDistinctUpReplicasBestFirst) {
  for (const char* policy : {"best", "round-robin", "least-loaded", "p2c", "consistent"}) {
    SCOPED_TRACE(policy);
    Table t = make(6, policy);
    bring_up(t, {1, 2, 3, 4, 5, 6});
    t.probe_failed(4, "x", kT0 + seconds(1));
    t.probe_failed(4, "x", kT0 + seconds(1));                                     // down
    t.probe_succeeded(5, ms(1), serving(0, 0, status::State::Draining), kLater);  // draining
    for (int k = 0; k < 100; ++k) {
      auto c = t.choose("/f" + std::to_string(k), 3, kLater);
      ASSERT_EQ(c.size(), 3u);
      std::set<size_t> seen;
      for (const auto& ch : c) {
        EXPECT_EQ(t.replicas()[ch.index].health, Health::Up);
        EXPECT_TRUE(seen.insert(ch.index).second);
        EXPECT_TRUE(std::isfinite(ch.score));
      }
      EXPECT_EQ(t.choose("/", 10, kLater).size(), 4u);  // all 4 up, no more
      EXPECT_TRUE(t.choose("/", 0, kLater).empty());
    }
  }
}

TEST(BalancerPolicy, BestHerdsABurst) {
  Table t = make(3, "best");
  bring_up(t, {1.0, 1.1, 1.2});
  auto counts = burst(t, 300);
  // The seed's behaviour: every client between two probes to the one replica.
  EXPECT_EQ(counts[0], 300u);
  EXPECT_EQ(counts[1], 0u);
  EXPECT_EQ(counts[2], 0u);
  auto c = t.choose("/", 3, kLater);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[1].index, 1u);
  EXPECT_EQ(c[2].index, 2u);
}

TEST(BalancerPolicy, P2CSpreadsABurstOverEqualReplicas) {
  for (uint64_t seed : {1, 2, 3, 42, 1234567}) {
    SCOPED_TRACE(seed);
    Table t = make(3, "p2c", seed);
    bring_up(t, {1, 1, 1});
    auto counts = burst(t, 300);
    for (size_t n : counts) {
      EXPECT_GE(n, 80u);
      EXPECT_LE(n, 120u);
    }
  }
}

TEST(BalancerPolicy, P2CFavoursAFasterReplicaWithoutHerding) {
  Table t = make(3, "p2c", 9);
  bring_up(t, {1, 10, 10});
  auto counts = burst(t, 300);
  // The fast one wins every pair it is in (about 2/3 of them).
  EXPECT_GT(counts[0], 160u);
  EXPECT_LT(counts[0], 240u);
  EXPECT_GT(counts[1], 20u);
  EXPECT_GT(counts[2], 20u);
}

TEST(BalancerPolicy, P2CAvoidsALoadedReplica) {
  Table t = make(3, "p2c", 5);
  bring_up(t, {1, 1, 1});
  t.probe_succeeded(2, ms(1), serving(3.0), kLater);
  auto counts = burst(t, 300);
  EXPECT_LT(counts[2], 10u);
}

TEST(BalancerPolicy, P2CFallbacksRankedByScore) {
  Table t = make(4, "p2c", 3);
  bring_up(t, {1, 2, 3, 4});
  for (int k = 0; k < 50; ++k) {
    auto c = t.choose("/", 4, kLater);
    ASSERT_EQ(c.size(), 4u);
    for (size_t j = 2; j < c.size(); ++j) EXPECT_LE(c[j - 1].score, c[j].score);
  }
}

TEST(BalancerPolicy, P2CIsDeterministicGivenTheSeed) {
  Table a = make(5, "p2c", 99), b = make(5, "p2c", 99);
  bring_up(a, {1, 2, 3, 4, 5});
  bring_up(b, {1, 2, 3, 4, 5});
  for (int k = 0; k < 200; ++k) {
    auto ca = a.choose("/", 3, kLater), cb = b.choose("/", 3, kLater);
    ASSERT_EQ(ca.size(), cb.size());
    for (size_t j = 0; j < ca.size(); ++j) EXPECT_EQ(ca[j].index, cb[j].index);
  }
}

// A large fleet: p2c touches a few replicas per choice, and still names
// distinct up replicas, the fallbacks in score order, spread over the fleet,
// never one that went down or drains.
TEST(BalancerPolicy, P2CInALargeFleet) {
  const size_t n = 1000;
  Table t = make(n, "p2c", 17);
  std::vector<double> rtts(n);
  for (size_t i = 0; i < n; ++i) rtts[i] = 1.0 + static_cast<double>(i % 7);
  bring_up(t, rtts);
  t.probe_failed(5, "refused", kLater, Failure::Refused);
  t.probe_succeeded(6, ms(1), serving(0, 1000, status::State::Draining), kLater);
  ASSERT_EQ(t.replicas()[5].health, Health::Down);
  ASSERT_EQ(t.replicas()[6].health, Health::Draining);
  std::set<size_t> firsts;
  std::vector<Choice> out;
  for (int k = 0; k < 3000; ++k) {
    t.choose("/", 3, kLater + milliseconds(k), out);
    ASSERT_EQ(out.size(), 3u);
    std::set<size_t> distinct;
    for (const auto& c : out) {
      EXPECT_NE(c.index, 5u);
      EXPECT_NE(c.index, 6u);
      EXPECT_EQ(t.replicas()[c.index].health, Health::Up);
      distinct.insert(c.index);
    }
    EXPECT_EQ(distinct.size(), 3u);
    EXPECT_LE(out[1].score, out[2].score);
    firsts.insert(out[0].index);
  }
  EXPECT_GT(firsts.size(), 500u);  // spread, not herded onto the lowest RTT
  // A replica that comes back is named again (here the closest, once its
  // slow start and the loss of its refusal are behind it).
  for (int k = 0; k < 30; ++k) t.probe_succeeded(5, ms(0.1), serving(), kLater + seconds(1));
  ASSERT_EQ(t.replicas()[5].health, Health::Up);
  bool named = false;
  for (int k = 0; k < 5000 && !named; ++k) {
    t.choose("/", 3, kLater + seconds(30), out);
    for (const auto& c : out) named = named || c.index == 5;
  }
  EXPECT_TRUE(named);
}

TEST(BalancerPolicy, RoundRobinRotatesOverUpReplicas) {
  Table t = make(4, "round-robin");
  bring_up(t, {5, 1, 3, 2});
  t.probe_failed(2, "x", kT0 + seconds(1));
  t.probe_failed(2, "x", kT0 + seconds(1));
  std::vector<size_t> order;
  for (int k = 0; k < 9; ++k) {
    auto c = t.choose("/", 2, kLater);
    ASSERT_EQ(c.size(), 2u);
    order.push_back(c[0].index);
    // The fallback is the next one in the rotation.
    EXPECT_EQ(c[1].index, c[0].index == 0 ? 1u : c[0].index == 1 ? 3u : 0u);
  }
  EXPECT_EQ(order, (std::vector<size_t>{0, 1, 3, 0, 1, 3, 0, 1, 3}));
  for (size_t i : {0, 1, 3}) EXPECT_EQ(t.replicas()[i].redirects_total, 3u);
}

TEST(BalancerPolicy, RoundRobinIgnoresReportedCapacityAndLoad) {
  // Round-robin does what the operator configured (equal weights here),
  // whatever the replicas report: measuring is the load-aware policies' job.
  Table t = make(3, "round-robin");
  bring_up(t, {1, 1, 1});
  t.probe_succeeded(0, ms(1), serving(0, 200), kLater);
  t.probe_succeeded(1, ms(1), serving(0.9, 100), kLater);
  t.probe_succeeded(2, ms(1), serving(0, 10), kLater);
  std::vector<size_t> order;
  for (int k = 0; k < 6; ++k) order.push_back(t.choose("/", 1, kLater)[0].index);
  EXPECT_EQ(order, (std::vector<size_t>{0, 1, 2, 0, 1, 2}));
}

TEST(BalancerPolicy, RoundRobinFollowsConfiguredWeightsInterleaved) {
  Table t(addrs(3, 33000, {4, 2, 1}), probe_settings(), balance_settings("round-robin"), 1);
  bring_up(t, {1, 1, 1});
  EXPECT_EQ(t.replicas()[0].weight, 4u);
  std::vector<size_t> order;
  for (int k = 0; k < 14; ++k) order.push_back(t.choose("/", 1, kLater)[0].index);
  // Smooth WRR for 4:2:1: every period of 7 gives 4/2/1, and the heavy one
  // never takes two in a row.
  const std::vector<size_t> period = {0, 1, 0, 2, 0, 1, 0};
  std::vector<size_t> twice = period;
  twice.insert(twice.end(), period.begin(), period.end());
  EXPECT_EQ(order, twice);
  EXPECT_EQ(t.replicas()[0].redirects_total, 8u);
  EXPECT_EQ(t.replicas()[1].redirects_total, 4u);
  EXPECT_EQ(t.replicas()[2].redirects_total, 2u);
  // rank() answers the same question without moving the rotation.
  const auto r1 = t.rank("/", 3, kLater), r2 = t.rank("/", 3, kLater);
  ASSERT_EQ(r1.size(), 3u);
  EXPECT_EQ(r1[0].index, r2[0].index);
  EXPECT_EQ(t.choose("/", 1, kLater)[0].index, r1[0].index);
}

TEST(BalancerPolicy, RoundRobinWeightsOfTheUpReplicasOnly) {
  Table t(addrs(3, 33000, {5, 2, 1}), probe_settings(), balance_settings("round-robin"), 1);
  bring_up(t, {1, 1, 1});
  t.probe_failed(0, "x", kT0 + seconds(1));
  t.probe_failed(0, "x", kT0 + seconds(1));
  ASSERT_EQ(t.replicas()[0].health, Health::Down);
  const auto counts = burst(t, 30);
  EXPECT_EQ(counts, (std::vector<size_t>{0, 20, 10}));
}

TEST(BalancerPolicy, RoundRobinTakesNewWeightsOnReconfigure) {
  Table t = make(2, "round-robin");
  bring_up(t, {1, 1});
  EXPECT_EQ(burst(t, 4), (std::vector<size_t>{2, 2}));
  t.reconfigure(addrs(2, 33000, {1, 3}), probe_settings(), balance_settings("round-robin"));
  EXPECT_EQ(t.replicas()[1].weight, 3u);
  EXPECT_EQ(t.replicas()[1].health, Health::Up);  // state kept, weight changed
  EXPECT_EQ(burst(t, 8), (std::vector<size_t>{2, 6}));
}

TEST(BalancerPolicy, WeightsDoNotSteerTheLoadAwarePolicies) {
  // The same table with and without weights chooses the same for every
  // policy but round-robin.
  for (const char* policy : {"best", "least-loaded", "p2c", "consistent"}) {
    SCOPED_TRACE(policy);
    Table a(addrs(3), probe_settings(), balance_settings(policy), 3);
    Table b(addrs(3, 33000, {100, 1, 7}), probe_settings(), balance_settings(policy), 3);
    for (Table* t : {&a, &b}) {
      bring_up(*t, {1, 2, 3});
      t->probe_succeeded(0, ms(1), serving(0.2, 40), kLater);
      t->probe_succeeded(1, ms(2), serving(0.1, 20), kLater);
      t->probe_succeeded(2, ms(3), serving(0.0, 10), kLater);
    }
    for (int k = 0; k < 50; ++k) {
      const std::string path = "/f/" + std::to_string(k);
      EXPECT_EQ(a.choose(path, 1, kLater)[0].index, b.choose(path, 1, kLater)[0].index);
    }
  }
}

TEST(BalancerPolicy, LeastLoadedPicksLowestLoadAndSpreadsABurst) {
  Table t = make(3, "least-loaded");
  bring_up(t, {1, 1, 1});
  t.probe_succeeded(0, ms(1), serving(0.5, 100), kLater);
  t.probe_succeeded(1, ms(1), serving(0.1, 100), kLater);
  t.probe_succeeded(2, ms(1), serving(0.3, 100), kLater);
  auto c = t.choose("/", 3, kLater);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].index, 1u);
  EXPECT_EQ(c[1].index, 2u);
  EXPECT_EQ(c[2].index, 0u);
  // Loads in clients (capacity 100): 50, 11, 30. 59 more level them out at 50.
  burst(t, 59);
  for (const auto& r : t.replicas()) EXPECT_NEAR(load_estimate(r), 0.5, 0.011);
}

TEST(BalancerPolicy, LeastLoadedTieBrokenByScore) {
  Table t = make(3, "least-loaded");
  bring_up(t, {3, 1, 2});
  auto c = t.choose("/", 3, kLater);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].index, 1u);
  EXPECT_EQ(c[1].index, 2u);
  EXPECT_EQ(c[2].index, 0u);
}

TEST(BalancerPolicy, RankRecordsNothing) {
  for (const char* policy : {"best", "round-robin", "least-loaded", "p2c", "consistent"}) {
    SCOPED_TRACE(policy);
    Table t = make(3, policy);
    bring_up(t, {1, 2, 3});
    for (int k = 0; k < 10; ++k) EXPECT_EQ(t.rank("/", 3, kLater).size(), 3u);
    for (const auto& r : t.replicas()) {
      EXPECT_EQ(r.sent_since_probe, 0);
      EXPECT_EQ(r.redirects_total, 0u);
    }
    if (std::string(policy) != "p2c") {
      // Deterministic policies: rank() previews what choose() answers.
      auto preview = t.rank("/a", 3, kLater);
      auto chosen = t.choose("/a", 3, kLater);
      ASSERT_EQ(preview.size(), chosen.size());
      for (size_t j = 0; j < chosen.size(); ++j) EXPECT_EQ(preview[j].index, chosen[j].index);
    }
  }
}

// ---------------------------------------------------------------- consistent

std::map<std::string, std::string> owners(Table& t, int paths) {
  std::map<std::string, std::string> m;
  for (int k = 0; k < paths; ++k) {
    const std::string path = "/content/" + std::to_string(k) + ".jpg";
    auto c = t.choose(path, 1, kLater);
    EXPECT_EQ(c.size(), 1u);
    if (!c.empty()) m[path] = t.replicas()[c[0].index].address.host;
  }
  return m;
}

TEST(BalancerConsistent, SamePathSameReplica) {
  Table t = make(5, "consistent");
  bring_up(t, {1, 2, 3, 4, 5});
  for (int k = 0; k < 200; ++k) {
    const std::string path = "/p/" + std::to_string(k);
    auto first = t.choose(path, 3, kLater);
    probe_all(t, kLater);
    for (int again = 0; again < 3; ++again) {
      auto c = t.choose(path, 3, kLater);
      probe_all(t, kLater);
      ASSERT_EQ(c.size(), 3u);
      for (size_t j = 0; j < 3; ++j) EXPECT_EQ(c[j].index, first[j].index);
    }
  }
}

TEST(BalancerConsistent, StableAcrossTablesAndSeeds) {
  // The ring depends only on the addresses: another balancer process (other
  // seed, other order of construction) sends a path to the same replica.
  Table a = make(5, "consistent", 1, 1000);
  Table b = make(5, "consistent", 2, 1000);
  bring_up(a, {1, 2, 3, 4, 5});
  bring_up(b, {5, 4, 3, 2, 1});
  EXPECT_EQ(owners(a, 500), owners(b, 500));
}

TEST(BalancerConsistent, PathsSpreadOverReplicas) {
  Table t = make(5, "consistent", 1, 1000);  // bound out of the way
  bring_up(t, {1, 2, 3, 4, 5});
  std::map<std::string, int> share;
  for (const auto& [path, host] : owners(t, 5000)) ++share[host];
  ASSERT_EQ(share.size(), 5u);
  for (const auto& [host, n] : share) {
    EXPECT_GT(n, 600) << host;  // 1000 each ideally
    EXPECT_LT(n, 1400) << host;
  }
}

TEST(BalancerConsistent, RemovingAReplicaMovesOnlyItsShare) {
  Table t = make(5, "consistent", 1, 1000);
  bring_up(t, {1, 2, 3, 4, 5});
  const auto before = owners(t, 4000);
  auto fewer = addrs(5);
  const std::string removed = fewer[2].address.host;
  fewer.erase(fewer.begin() + 2);
  t.reconfigure(fewer, probe_settings(), balance_settings("consistent", 1000));
  ASSERT_EQ(t.up_count(), 4u);  // state kept
  const auto after = owners(t, 4000);
  int moved = 0;
  for (const auto& [path, host] : before) {
    if (host == removed) {
      ++moved;
      EXPECT_NE(after.at(path), removed);
    } else {
      EXPECT_EQ(after.at(path), host) << path;  // nothing else moves
    }
  }
  EXPECT_GT(moved, 4000 * 0.10);
  EXPECT_LT(moved, 4000 * 0.30);
}

TEST(BalancerConsistent, AddingAReplicaMovesPathsOnlyToIt) {
  Table t = make(4, "consistent", 1, 1000);
  bring_up(t, {1, 2, 3, 4});
  const auto before = owners(t, 4000);
  t.reconfigure(addrs(5), probe_settings(), balance_settings("consistent", 1000));
  bring_up(t, {1, 1, 1, 1, 1}, kT0);  // the new one comes up (long before kLater)
  const auto after = owners(t, 4000);
  const std::string added = addrs(5)[4].address.host;
  int moved = 0;
  for (const auto& [path, host] : before) {
    if (after.at(path) != host) {
      ++moved;
      EXPECT_EQ(after.at(path), added);
    }
  }
  EXPECT_GT(moved, 4000 * 0.10);
  EXPECT_LT(moved, 4000 * 0.30);
}

TEST(BalancerConsistent, DownReplicaPathsGoToTheNextOnTheRing) {
  Table t = make(5, "consistent", 1, 1000);
  bring_up(t, {1, 2, 3, 4, 5});
  std::map<std::string, std::vector<size_t>> before;
  for (int k = 0; k < 500; ++k) {
    const std::string path = "/x/" + std::to_string(k);
    for (const auto& c : t.choose(path, 2, kLater)) before[path].push_back(c.index);
  }
  t.probe_failed(0, "x", kLater);
  t.probe_failed(0, "x", kLater);
  for (const auto& [path, idx] : before) {
    auto c = t.choose(path, 1, kLater);
    ASSERT_EQ(c.size(), 1u);
    // Its first fallback takes over; everyone else's paths stay.
    EXPECT_EQ(c[0].index, idx[0] == 0 ? idx[1] : idx[0]) << path;
  }
}

TEST(BalancerConsistent, HotPathSpillsWithBoundedLoad) {
  const double factor = 1.25;
  Table t = make(3, "consistent", 1, factor);
  bring_up(t, {1, 1, 1});
  const std::string hot = "/hot/video.mp4";
  std::vector<size_t> counts(3, 0);
  size_t home = 99;
  for (size_t m = 1; m <= 300; ++m) {
    auto c = t.choose(hot, 3, kLater);
    ASSERT_EQ(c.size(), 3u);
    if (m == 1) home = c[0].index;
    ++counts[c[0].index];
    // The bound holds after every single client: ceil(factor x mean).
    const size_t bound = static_cast<size_t>(std::ceil(factor * static_cast<double>(m) / 3.0));
    for (size_t n : counts) EXPECT_LE(n, bound) << "after " << m;
  }
  EXPECT_EQ(counts[home], 125u);  // its full share, no more
  size_t used = 0;
  for (size_t n : counts) used += n > 0 ? 1 : 0;
  EXPECT_GE(used, 2u);
  // After a probe round resets the estimates it has the path again.
  probe_all(t, kLater);
  EXPECT_EQ(t.choose(hot, 1, kLater)[0].index, home);
}

TEST(BalancerConsistent, BoundedLoadOverManyPathsWithUnevenShares) {
  const double factor = 1.1;
  Table t = make(4, "consistent", 1, factor);
  bring_up(t, {1, 1, 1, 1});
  std::vector<size_t> counts(4, 0);
  for (size_t m = 1; m <= 2000; ++m) {
    // Zipf-like: a few paths take most requests.
    const std::string path = "/z/" + std::to_string((m * m) % 37 % (1 + m % 5));
    auto c = t.choose(path, 2, kLater);
    ASSERT_FALSE(c.empty());
    ++counts[c[0].index];
    const double bound = std::ceil(factor * static_cast<double>(m) / 4.0);
    for (size_t n : counts) ASSERT_LE(static_cast<double>(n), bound) << "after " << m;
  }
}

TEST(BalancerConsistent, ReportedLoadCountsTowardsTheBound) {
  Table t = make(3, "consistent", 1, 1.25);
  bring_up(t, {1, 1, 1});
  const std::string path = "/busy";
  const size_t home = t.choose(path, 1, kLater)[0].index;
  probe_all(t, kLater);
  t.probe_succeeded(home, ms(1), serving(2.0), kLater);  // overloaded by others' clients
  auto c = t.choose(path, 3, kLater);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_NE(c[0].index, home);
  EXPECT_EQ(c[2].index, home);  // skipped ones come last as fallbacks
}

TEST(BalancerConsistent, NoReplicaUnderTheBoundStillAnswers) {
  // Fractional reported loads with a tight factor can leave no replica under
  // the bound; the least loaded one is taken.
  Table t = make(3, "consistent", 1, 1.01);
  bring_up(t, {1, 1, 1});
  t.probe_succeeded(0, ms(1), serving(0.7, 10), kLater);
  t.probe_succeeded(1, ms(1), serving(0.5, 10), kLater);
  t.probe_succeeded(2, ms(1), serving(0.6, 10), kLater);
  for (int k = 0; k < 20; ++k) EXPECT_EQ(t.choose("/q", 3, kLater).size(), 3u);
}

// ---------------------------------------------------------------- reconfigure

TEST(BalancerReconfigure, KeepsStateOfReplicasThatStay) {
  Table t = make(3, "p2c");
  bring_up(t, {1, 5, 9});
  t.choose("/", 1, kLater);
  const auto a1 = t.replicas()[1].address;
  const double rtt1 = *t.replicas()[1].rtt_ms;
  std::vector<config::ReplicaEntry> next = {addrs(3)[2], {{"10.9.9.9", 8080}}, {a1}};
  t.reconfigure(next, probe_settings(), balance_settings("round-robin"));
  EXPECT_EQ(t.policy(), Policy::RoundRobin);
  ASSERT_EQ(t.replicas().size(), 3u);
  EXPECT_EQ(t.replicas()[0].address, addrs(3)[2].address);
  EXPECT_EQ(t.replicas()[0].health, Health::Up);
  EXPECT_DOUBLE_EQ(*t.replicas()[0].rtt_ms, 9.0);
  EXPECT_EQ(t.replicas()[1].address.host, "10.9.9.9");
  EXPECT_EQ(t.replicas()[1].health, Health::Down);  // new ones start down
  EXPECT_FALSE(t.replicas()[1].rtt_ms);
  EXPECT_EQ(t.replicas()[2].address, a1);
  EXPECT_EQ(t.replicas()[2].health, Health::Up);
  EXPECT_DOUBLE_EQ(*t.replicas()[2].rtt_ms, rtt1);
  EXPECT_EQ(t.up_count(), 2u);
  // Same host, other port: a different replica.
  t.reconfigure({{config::HostPort{a1.host, 1}}}, probe_settings(), balance_settings("p2c"));
  EXPECT_EQ(t.up_count(), 0u);
}

TEST(BalancerReconfigure, NewPolicyApplies) {
  Table t = make(2, "p2c");
  bring_up(t, {1, 1});
  t.reconfigure(addrs(2), probe_settings(), balance_settings("round-robin"));
  EXPECT_EQ(t.policy(), Policy::RoundRobin);
  EXPECT_EQ(t.up_count(), 2u);
}

TEST(BalancerReconfigure, NewRiseAndFallApply) {
  Table t = make(1, "p2c");
  t.reconfigure(addrs(1), probe_settings(1, 1), balance_settings("p2c"));
  t.probe_succeeded(0, ms(1), serving(), kT0);
  EXPECT_EQ(t.replicas()[0].health, Health::Up);
  t.probe_failed(0, "x", kT0);
  EXPECT_EQ(t.replicas()[0].health, Health::Down);
}

TEST(BalancerReconfigure, RoundRobinSurvivesShrinking) {
  Table t = make(5, "round-robin");
  bring_up(t, {1, 1, 1, 1, 1});
  for (int k = 0; k < 4; ++k) t.choose("/", 1, kLater);
  t.reconfigure(addrs(2), probe_settings(), balance_settings("round-robin"));
  std::vector<size_t> order;
  for (int k = 0; k < 4; ++k) order.push_back(t.choose("/", 1, kLater)[0].index);
  EXPECT_EQ(order, (std::vector<size_t>{0, 1, 0, 1}));
}

// The 302 path: once warm, a choice into a reused vector allocates nothing,
// whatever the policy (the table keeps its scratch space).
TEST(BalancerTable, ChoiceIntoAReusedVectorDoesNotAllocate) {
  for (const char* policy : {"best", "round-robin", "least-loaded", "p2c", "consistent"}) {
    Table t = make(5, policy);
    bring_up(t, {1, 2, 3, 4, 5}, kT0);
    std::vector<Choice> out;
    t.choose("/a", 3, kLater, out);  // warm-up: scratch and ring are built
    t.choose("/b", 3, kLater, out);
    const uint64_t before = tl_allocations;
    for (int k = 0; k < 100; ++k) {
      t.choose(k % 2 ? "/a" : "/b", 3, kLater, out);
      ASSERT_EQ(out.size(), 3u) << policy;
    }
    EXPECT_EQ(tl_allocations - before, 0u) << policy;
    // The same answer as the allocating form (round-robin advances: skip).
    if (std::string_view(policy) != "round-robin" && std::string_view(policy) != "p2c") {
      t.choose("/a", 3, kLater, out);
      const auto copy = out;
      t.rank("/a", 3, kLater, out);
      EXPECT_EQ(out.size(), copy.size()) << policy;
    }
  }
}

}  // namespace
// ---------------------------------------------------------------- failover, bytes, capacity

TEST(BalancerFailover, RefusedConnectionTakesAReplicaOutAtOnce) {
  Table t(addrs(2), probe_settings(2, 3), balance_settings("p2c"), 1);
  bring_up(t, {1, 1});
  t.probe_failed(0, "timeout", kT0 + seconds(1));  // a hiccup: still up (fall 3)
  EXPECT_EQ(t.replicas()[0].health, Health::Up);
  t.probe_failed(0, "connection refused", kT0 + seconds(2), Failure::Refused);
  EXPECT_EQ(t.replicas()[0].health, Health::Down);
  EXPECT_EQ(t.replicas()[0].probe_failures_total, 2u);
  for (int k = 0; k < 20; ++k) EXPECT_EQ(t.choose("/", 1, kT0 + seconds(2))[0].index, 1u);
  // Coming back, it rises like any other.
  t.probe_succeeded(0, ms(1), serving(), kT0 + seconds(3));
  EXPECT_EQ(t.replicas()[0].health, Health::Down);
  t.probe_succeeded(0, ms(1), serving(), kT0 + seconds(4));
  EXPECT_EQ(t.replicas()[0].health, Health::Up);
}

TEST(BalancerFailover, RefusedWhileDownStaysDown) {
  Table t(addrs(1), probe_settings(), balance_settings("p2c"), 1);
  t.probe_failed(0, "connection refused", kT0, Failure::Refused);
  EXPECT_EQ(t.replicas()[0].health, Health::Down);
  EXPECT_EQ(t.replicas()[0].bad_streak, 1u);
}

TEST(BalancerBytes, ByteLoadFollowsTheReplicaMovingTheBytes) {
  Table t = make(2, "least-loaded");
  bring_up(t, {1, 1});
  // Equal connections, but replica 0 sends 9x the bytes (the large files).
  auto a = serving(0.5, 100);
  a.bytes_per_second = 9e6;
  auto b = serving(0.5, 100);
  b.bytes_per_second = 1e6;
  t.probe_succeeded(0, ms(1), a, kLater);
  t.probe_succeeded(1, ms(1), b, kLater);
  t.refresh_scores(kLater);
  // 100 busy clients shared 90/10 by bytes: byte loads 0.9 and 0.1.
  EXPECT_DOUBLE_EQ(t.replicas()[0].byte_load, 0.9);
  EXPECT_DOUBLE_EQ(t.replicas()[1].byte_load, 0.1);
  EXPECT_DOUBLE_EQ(probe_load(t.replicas()[0]), 0.7);
  EXPECT_DOUBLE_EQ(probe_load(t.replicas()[1]), 0.3);
  EXPECT_EQ(t.choose("/", 1, kLater)[0].index, 1u);
  EXPECT_GT(t.replicas()[0].score, t.replicas()[1].score);
}

TEST(BalancerBytes, NoBytesReportedMeansConnectionsOnly) {
  Table t = make(2, "least-loaded");
  bring_up(t, {1, 1});
  t.probe_succeeded(0, ms(1), serving(0.4), kLater);
  t.refresh_scores(kLater);
  EXPECT_LT(t.replicas()[0].byte_load, 0);
  EXPECT_DOUBLE_EQ(probe_load(t.replicas()[0]), 0.4);
}

TEST(BalancerCapacity, P2CSharesFollowCapacityInABurst) {
  Table t = make(3, "p2c", 7);
  const std::vector<uint64_t> caps{40, 20, 10};
  for (int k = 0; k < 2; ++k) {
    for (size_t i = 0; i < 3; ++i) t.probe_succeeded(i, ms(1), serving(0, caps[i]), kT0);
  }
  auto counts = burst(t, 700);
  EXPECT_NEAR(static_cast<double>(counts[0]) / 700, 4.0 / 7, 0.04);
  EXPECT_NEAR(static_cast<double>(counts[1]) / 700, 2.0 / 7, 0.04);
  EXPECT_NEAR(static_cast<double>(counts[2]) / 700, 1.0 / 7, 0.04);
}

TEST(BalancerCapacity, ConsistentRingAndBoundFollowCapacity) {
  Table t = make(3, "consistent", 1, 1.25);
  const std::vector<uint64_t> caps{40, 20, 10};
  for (int k = 0; k < 2; ++k) {
    for (size_t i = 0; i < 3; ++i) t.probe_succeeded(i, ms(1), serving(0, caps[i]), kT0);
  }
  std::vector<size_t> counts(3, 0);
  for (int m = 0; m < 700; ++m) {
    auto c = t.choose("/f/" + std::to_string(m), 1, kLater);
    ++counts[c[0].index];
    // Bound: no replica above ceil(1.25 x mean load x its capacity) clients.
    const double mean = static_cast<double>(m + 1) / 70.0;
    for (size_t i = 0; i < 3; ++i) {
      ASSERT_LE(static_cast<double>(counts[i]),
                std::ceil(1.25 * mean * static_cast<double>(caps[i])) + 1e-9);
    }
  }
  EXPECT_NEAR(static_cast<double>(counts[0]) / 700, 4.0 / 7, 0.06);
  EXPECT_NEAR(static_cast<double>(counts[2]) / 700, 1.0 / 7, 0.06);
  // Once the burst is over (a probe round later), a path keeps its replica
  // (cache affinity).
  auto idle_round = [&](Clock::time_point at) {
    for (size_t i = 0; i < 3; ++i) t.probe_succeeded(i, ms(1), serving(0, caps[i]), at);
  };
  idle_round(kLater + seconds(1));
  const size_t home = t.choose("/f/1", 1, kLater + seconds(1))[0].index;
  idle_round(kLater + seconds(2));
  EXPECT_EQ(t.choose("/f/1", 1, kLater + seconds(2))[0].index, home);
}

}  // namespace cdn::balancer

namespace cdn::balancer {
namespace {

// "localhost:p", "127.0.0.1:p" and "127.000.000.001:p": one replica.
TEST(TableResolved, SecondSpellingsOfOneAddressCountOnce) {
  Table t(addrs(3), probe_settings(), balance_settings("round-robin"));
  EXPECT_EQ(t.set_resolved(1, "127.0.0.1:1"), std::nullopt);  // the literal, first
  EXPECT_EQ(t.set_resolved(2, "127.0.0.1:1"), std::optional<size_t>(1));
  EXPECT_EQ(t.set_resolved(0, "127.0.0.1:1"), std::optional<size_t>(1));  // the name, later
  EXPECT_EQ(t.distinct_count(), 1u);
  // The same answer again is not news (no second warning).
  EXPECT_EQ(t.set_resolved(0, "127.0.0.1:1"), std::nullopt);
  // Probes of a second spelling (sent before it was found out) are ignored.
  for (size_t i = 0; i < 3; ++i) {
    for (int k = 0; k < 2; ++k) t.probe_succeeded(i, ms(1), serving(), kT0);
  }
  EXPECT_EQ(t.up_count(), 1u);
  EXPECT_EQ(t.replicas()[0].health, Health::Down);
  EXPECT_EQ(t.replicas()[2].health, Health::Down);
  // Every client goes to the one replica, none to a second spelling.
  for (int k = 0; k < 10; ++k) {
    const auto picks = t.choose("/", 3, kLater);
    ASSERT_EQ(picks.size(), 1u);
    EXPECT_EQ(picks[0].index, 1u);
  }
}

TEST(TableResolved, AMovedAddressEndsOrMakesADuplicate) {
  Table t(addrs(3), probe_settings(), balance_settings("p2c"));
  EXPECT_EQ(t.set_resolved(0, "10.9.9.9:1"), std::nullopt);
  EXPECT_EQ(t.set_resolved(1, "10.9.9.9:1"), std::optional<size_t>(0));
  EXPECT_EQ(t.set_resolved(2, "10.9.9.9:1"), std::optional<size_t>(0));
  // The kept one moves away: the first of its second spellings takes its
  // place, the other now follows that one.
  EXPECT_EQ(t.set_resolved(0, "10.8.8.8:1"), std::nullopt);
  EXPECT_FALSE(t.replicas()[1].same_as);
  EXPECT_EQ(t.replicas()[2].same_as, std::optional<size_t>(1));
  EXPECT_EQ(t.distinct_count(), 2u);
  // A second spelling that moves to an address of its own stands alone.
  EXPECT_EQ(t.set_resolved(2, "10.7.7.7:1"), std::nullopt);
  EXPECT_EQ(t.distinct_count(), 3u);
  // One that moves onto a kept replica's address while up goes down.
  for (int k = 0; k < 2; ++k) t.probe_succeeded(2, ms(1), serving(), kT0);
  EXPECT_EQ(t.up_count(), 1u);
  EXPECT_EQ(t.set_resolved(2, "10.8.8.8:1"), std::optional<size_t>(0));
  EXPECT_EQ(t.up_count(), 0u);
  EXPECT_EQ(t.replicas()[2].health, Health::Down);
}

TEST(TableResolved, AReloadForgetsAddressesForTheProberToTellAgain) {
  Table t(addrs(2), probe_settings(), balance_settings("p2c"));
  t.set_resolved(0, "127.0.0.1:1");
  t.set_resolved(1, "127.0.0.1:1");
  t.reconfigure(addrs(2), probe_settings(), balance_settings("p2c"));
  EXPECT_EQ(t.distinct_count(), 2u);
  EXPECT_TRUE(t.replicas()[0].resolved.empty());
}

}  // namespace
}  // namespace cdn::balancer

// ---------------------------------------------------------------- workers

namespace cdn::balancer {
namespace {

// Two workers' tables adopt the main table's snapshots and share one place
// in the rotation: the weights hold over both together, however the clients
// fall on them (here: worker 0 takes the first 5 of every 8, worker 1 the rest).
TEST(BalancerWorkers, SharedRotationKeepsWeightsOverWorkers) {
  Table main(addrs(2, 33000, {3, 1}), probe_settings(), balance_settings("round-robin"), 1);
  bring_up(main, {1, 1});
  main.prepare_snapshot();
  std::atomic<uint64_t> ticket{0};
  std::vector<Table> workers(2, main);
  for (size_t w = 0; w < workers.size(); ++w) {
    workers[w].reseed(100 + w);
    workers[w].share_rotation(&ticket);
  }
  std::vector<size_t> counts(2, 0);
  for (size_t k = 0; k < 64; ++k) {
    Table& t = workers[k % 8 < 5 ? 0 : 1];
    if (k == 32) {
      // A newer snapshot half-way: the place in the rotation stays shared.
      for (auto& w : workers) w.adopt(main);
    }
    auto c = t.choose("/", 2, kLater);
    ASSERT_EQ(c.size(), 2u);
    EXPECT_NE(c[0].index, c[1].index);  // the fallback is the other replica
    ++counts[c.front().index];
  }
  EXPECT_EQ(counts, (std::vector<size_t>{48, 16}));
  EXPECT_EQ(ticket.load(), 64u);
}

// What a worker sends is folded into the main table like its own choices.
TEST(BalancerWorkers, AddSentCountsLikeAChoice) {
  Table t = make(2, "least-loaded");
  bring_up(t, {1, 1});
  t.add_sent(0, 5);
  t.add_sent(7, 5);  // out of range: ignored
  EXPECT_EQ(t.replicas()[0].redirects_total, 5u);
  EXPECT_DOUBLE_EQ(t.replicas()[0].sent_since_probe, 5.0);
  EXPECT_EQ(t.choose("/", 1, kLater).front().index, 1u);
}

// Adopting a snapshot keeps the worker's own random draws: two workers
// seeded apart do not draw the same p2c pairs after each publication.
TEST(BalancerWorkers, AdoptKeepsTheWorkersOwnGenerator) {
  Table main = make(16, "p2c", 7);
  bring_up(main, std::vector<double>(16, 1));
  Table a = main, b = main;
  a.reseed(1);
  b.reseed(2);
  size_t same = 0;
  for (int round = 0; round < 20; ++round) {
    a.adopt(main);
    b.adopt(main);
    if (a.choose("/", 1, kLater).front().index == b.choose("/", 1, kLater).front().index) ++same;
  }
  EXPECT_LT(same, 10u);
}

}  // namespace
}  // namespace cdn::balancer
