// SPDX-License-Identifier: MIT
#include "daemons/balancerd/traffic.hpp"

#include <algorithm>
#include <stdexcept>
#include <unordered_set>

namespace cdn::balancer {

TrafficHistory::TrafficHistory(Clock::duration interval, size_t slots)
    : interval_(interval), slots_(slots) {
  if (interval_ <= Clock::duration::zero() || slots_ == 0) {
    throw std::invalid_argument("TrafficHistory: interval and slots must be positive");
  }
}

int64_t TrafficHistory::interval_of(Clock::time_point t) const {
  // A time before the first sample (not expected from a steady clock) is
  // counted in the first interval.
  if (!origin_ || t < *origin_) return 0;
  return static_cast<int64_t>((t - *origin_) / interval_);
}

void TrafficHistory::advance(int64_t k) {
  if (k <= newest_) return;
  // Past a whole ring every slot is stale: zero each once.
  const int64_t from = std::max(newest_ + 1, k - static_cast<int64_t>(slots_) + 1);
  for (auto& [address, s] : series_) {
    for (int64_t j = from; j <= k; ++j) s.ring[static_cast<size_t>(j) % slots_] = 0;
  }
  newest_ = k;
}

void TrafficHistory::sample(Clock::time_point now,
                            const std::vector<std::pair<std::string, uint64_t>>& totals) {
  if (!origin_) origin_ = now;
  const int64_t k = interval_of(now);
  advance(k);
  std::unordered_set<std::string_view> named;
  named.reserve(totals.size());
  for (const auto& [address, total] : totals) {
    named.insert(address);
    auto [it, added] = series_.try_emplace(address);
    Series& s = it->second;
    if (added) {
      s.ring.assign(slots_, 0);
      s.last_total = total;
      continue;
    }
    const uint64_t grew = total >= s.last_total ? total - s.last_total : total;
    s.last_total = total;
    // A sample late for its interval (time went backwards) counts in the newest.
    s.ring[static_cast<size_t>(std::max(k, newest_)) % slots_] += grew;
  }
  std::erase_if(series_, [&](const auto& kv) { return !named.contains(kv.first); });
}

std::vector<uint64_t> TrafficHistory::counts(std::string_view address,
                                             Clock::time_point now) const {
  std::vector<uint64_t> out(slots_, 0);
  const auto it = series_.find(std::string(address));
  if (it == series_.end()) return out;
  const int64_t k = std::max(interval_of(now), newest_);
  const int64_t n = static_cast<int64_t>(slots_);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = k - n + 1 + i;
    // Only intervals the ring still holds: (newest_ - n, newest_].
    if (j >= 0 && j <= newest_ && j > newest_ - n) {
      out[static_cast<size_t>(i)] = it->second.ring[static_cast<size_t>(j) % slots_];
    }
  }
  return out;
}

}  // namespace cdn::balancer
