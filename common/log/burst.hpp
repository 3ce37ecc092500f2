// SPDX-License-Identifier: MIT
// One log line per burst of the same failure, not one per occurrence: a
// process out of descriptors fails every request for as long as it lasts,
// and a line each would bury the log (and cost a write each) exactly when
// the operator needs to read it. Pure: the caller passes the time and logs
// what it is told to, so tests drive it with a made-up clock.
//
// A burst starts with a failure (log it in full) and goes on while failures
// come; one that lasts is summed up at most once per `every`. It ends at the
// first success that comes `settle` after the last failure (log that, with
// the failures not yet logged): at the edge of a shortage, where successes
// and failures alternate, a success alone does not end it, or the log would
// get two lines per request again.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <utility>

namespace cdn::log {

class Burst {
 public:
  using Clock = std::chrono::steady_clock;
  Burst(Clock::duration every, Clock::duration settle) : every_(every), settle_(settle) {}

  struct Report {
    bool first = false;     // log the failure in full: a burst begins
    uint64_t repeated = 0;  // > 0: log "this many more since the last line"
  };
  // A failure at `now`.
  Report failed(Clock::time_point now) {
    last_failure_ = now;
    if (!active_) {
      active_ = true;
      unreported_ = 0;
      last_line_ = now;
      return {true, 0};
    }
    ++unreported_;
    if (now - last_line_ < every_) return {};
    last_line_ = now;
    return {false, std::exchange(unreported_, 0)};
  }
  // A success at `now`. When it ends the burst, returns the failures not
  // yet logged (log that the trouble is over, with the count); nullopt:
  // nothing to log. Cheap enough for every success.
  std::optional<uint64_t> succeeded(Clock::time_point now) {
    if (!active_ || now - last_failure_ < settle_) return std::nullopt;
    active_ = false;
    return std::exchange(unreported_, 0);
  }
  bool active() const { return active_; }

 private:
  Clock::duration every_;
  Clock::duration settle_;
  Clock::time_point last_line_{};
  Clock::time_point last_failure_{};
  uint64_t unreported_ = 0;
  bool active_ = false;
};

}  // namespace cdn::log
