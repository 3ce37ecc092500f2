// SPDX-License-Identifier: MIT
// cdn-get's progress line, pure: fed byte counts and times (a fake clock in
// tests), it says what to draw and when. The terminal (redraw in place with
// \r, only on a TTY, not with -q) is main.cc's adapter.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>

namespace cdn::get {

// "512 B", "1.5 KiB", "12.3 MiB", "1.02 GiB".
std::string format_bytes(uint64_t n);
// "0:07", "12:34", "1:02:03".
std::string format_eta(std::chrono::seconds s);

class Progress {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr uint64_t kUnknown = UINT64_MAX;

  // A body begins (again): `bytes` already held (a resumed download), of
  // `total` (kUnknown when the replica did not say), from `replica`.
  void start(Clock::time_point now, uint64_t bytes, uint64_t total, std::string replica);
  // The line to draw now, or nullopt when the last one is younger than the
  // redraw interval (a terminal redrawn every packet flickers and costs).
  std::optional<std::string> update(Clock::time_point now, uint64_t bytes);
  // The line for these figures, whatever the time of the last one.
  std::string line(Clock::time_point now) const;

  // Redraws at most this often; the rate is measured over the last window.
  static constexpr std::chrono::milliseconds kRedraw{200};
  static constexpr std::chrono::milliseconds kWindow{5000};

 private:
  struct Sample {
    Clock::time_point at;
    uint64_t bytes;
  };
  std::deque<Sample> samples_;  // oldest first, within kWindow of the newest
  uint64_t bytes_ = 0;
  uint64_t total_ = kUnknown;
  std::string replica_;
  std::optional<Clock::time_point> drawn_;
};

}  // namespace cdn::get
