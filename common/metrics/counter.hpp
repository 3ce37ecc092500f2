// SPDX-License-Identifier: MIT
// A figure one thread writes and any thread reads: the statistics of a
// worker, which the status and metrics pages (served by any worker) add up.
// Relaxed atomics: the one writer pays a plain load and store (no locked
// instruction), a reader sees some recent value, and neither is a data race.
// Not for two writers: their increments would be lost (use fetch_add then).
#pragma once

#include <atomic>
#include <cstdint>

namespace cdn::metrics {

class OwnCounter {
 public:
  OwnCounter() = default;
  OwnCounter(uint64_t v) : v_(v) {}  // NOLINT(google-explicit-constructor): a number
  OwnCounter(const OwnCounter& o) : v_(o.get()) {}
  OwnCounter& operator=(const OwnCounter& o) {
    set(o.get());
    return *this;
  }
  OwnCounter& operator=(uint64_t v) {
    set(v);
    return *this;
  }

  uint64_t get() const { return v_.load(std::memory_order_relaxed); }
  operator uint64_t() const { return get(); }  // NOLINT(google-explicit-constructor)

  OwnCounter& operator++() { return *this += 1; }
  OwnCounter& operator--() { return *this -= 1; }
  void operator++(int) { *this += 1; }
  void operator--(int) { *this -= 1; }
  OwnCounter& operator+=(uint64_t d) {
    set(get() + d);
    return *this;
  }
  OwnCounter& operator-=(uint64_t d) {
    set(get() - d);
    return *this;
  }

 private:
  void set(uint64_t v) { v_.store(v, std::memory_order_relaxed); }
  std::atomic<uint64_t> v_{0};
};

}  // namespace cdn::metrics
