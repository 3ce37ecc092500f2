// SPDX-License-Identifier: MIT
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "daemons/balancerd/traffic.hpp"

namespace {

using cdn::balancer::TrafficHistory;
using namespace std::chrono_literals;
using Totals = std::vector<std::pair<std::string, uint64_t>>;
using Counts = std::vector<uint64_t>;

const TrafficHistory::Clock::time_point t0{};

TEST(TrafficHistory, CountsWhatEachTotalGrewPerInterval) {
  TrafficHistory h(10s, 4);
  h.sample(t0, {{"a:1", 100}, {"b:1", 7}});  // bases, not traffic
  h.sample(t0 + 3s, {{"a:1", 105}, {"b:1", 7}});
  h.sample(t0 + 9s, {{"a:1", 106}, {"b:1", 9}});
  h.sample(t0 + 12s, {{"a:1", 116}, {"b:1", 10}});
  EXPECT_EQ(h.counts("a:1", t0 + 12s), (Counts{0, 0, 6, 10}));
  EXPECT_EQ(h.counts("b:1", t0 + 12s), (Counts{0, 0, 2, 1}));
}

TEST(TrafficHistory, OldIntervalsScrollOutAndIdleOnesAreZero) {
  TrafficHistory h(10s, 3);
  h.sample(t0, {{"a:1", 0}});
  h.sample(t0 + 1s, {{"a:1", 1}});
  h.sample(t0 + 11s, {{"a:1", 3}});
  h.sample(t0 + 21s, {{"a:1", 6}});
  EXPECT_EQ(h.counts("a:1", t0 + 21s), (Counts{1, 2, 3}));
  // Asked later with no sample since: the window moves on, in zeros.
  EXPECT_EQ(h.counts("a:1", t0 + 31s), (Counts{2, 3, 0}));
  EXPECT_EQ(h.counts("a:1", t0 + 99s), (Counts{0, 0, 0}));
  // A sample after a long silence clears every stale slot.
  h.sample(t0 + 200s, {{"a:1", 10}});
  EXPECT_EQ(h.counts("a:1", t0 + 200s), (Counts{0, 0, 4}));
  h.sample(t0 + 210s, {{"a:1", 11}});
  EXPECT_EQ(h.counts("a:1", t0 + 210s), (Counts{0, 4, 1}));
}

TEST(TrafficHistory, ReplicasComeAndGo) {
  TrafficHistory h(1s, 2);
  EXPECT_EQ(h.counts("a:1", t0), (Counts{0, 0}));
  h.sample(t0, {{"a:1", 5}});
  h.sample(t0 + 500ms, {{"a:1", 8}, {"b:1", 2}});
  EXPECT_EQ(h.counts("a:1", t0 + 500ms), (Counts{0, 3}));
  EXPECT_EQ(h.counts("b:1", t0 + 500ms), (Counts{0, 0}));
  // a:1 removed by a reload, then back with its count restarted.
  h.sample(t0 + 1s, {{"b:1", 4}});
  EXPECT_EQ(h.counts("a:1", t0 + 1s), (Counts{0, 0}));
  h.sample(t0 + 1200ms, {{"a:1", 1}, {"b:1", 4}});
  h.sample(t0 + 1300ms, {{"a:1", 0}, {"b:1", 5}});  // restarted again: counts from 0
  h.sample(t0 + 1400ms, {{"a:1", 2}, {"b:1", 5}});
  EXPECT_EQ(h.counts("a:1", t0 + 1400ms), (Counts{0, 2}));
  EXPECT_EQ(h.counts("b:1", t0 + 1400ms), (Counts{0, 3}));
}

TEST(TrafficHistory, RefusesAnEmptyRing) {
  EXPECT_THROW(TrafficHistory(0s, 3), std::invalid_argument);
  EXPECT_THROW(TrafficHistory(1s, 0), std::invalid_argument);
}

}  // namespace
