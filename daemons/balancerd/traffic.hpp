// SPDX-License-Identifier: MIT
// Clients sent to each replica over the last minutes, for the dashboard's
// share chart: per replica, a ring of counts, one per fixed interval. Pure:
// fed with the table's running totals and explicit times.
//
// Intervals are numbered from the first sample; the ring holds the last
// `slots` of them, the newest being the one under way. A replica's ring
// lives as long as the replica is named in the samples.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace cdn::balancer {

class TrafficHistory {
 public:
  using Clock = std::chrono::steady_clock;

  TrafficHistory(Clock::duration interval, size_t slots);

  // Running totals (clients sent so far), by replica address, at `now`.
  // What a total grew by since the last sample is counted in the interval
  // `now` falls in; the first sample of a replica only sets its base. A
  // replica not named is forgotten; a total below the last one (the count
  // was restarted) counts from zero.
  void sample(Clock::time_point now, const std::vector<std::pair<std::string, uint64_t>>& totals);

  // The counts of `address`, oldest first, slots() long, the last being the
  // interval under way at `now`; intervals no sample reached count 0. All
  // zeros for an address never sampled.
  std::vector<uint64_t> counts(std::string_view address, Clock::time_point now) const;

  Clock::duration interval() const { return interval_; }
  size_t slots() const { return slots_; }

 private:
  struct Series {
    uint64_t last_total = 0;
    std::vector<uint64_t> ring;  // slot = interval number % slots_
  };
  int64_t interval_of(Clock::time_point t) const;
  // Moves the newest interval to `k`, zeroing the slots it passes.
  void advance(int64_t k);

  Clock::duration interval_;
  size_t slots_;
  std::optional<Clock::time_point> origin_;
  int64_t newest_ = 0;  // the interval number the rings end at
  std::unordered_map<std::string, Series> series_;
};

}  // namespace cdn::balancer
