// SPDX-License-Identifier: MIT
#include "client/progress.hpp"

#include <cmath>
#include <cstdio>

namespace cdn::get {

std::string format_bytes(uint64_t n) {
  if (n < 1024) return std::to_string(n) + " B";
  constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n) / 1024;
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(kUnits)) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  (void)std::snprintf(buf, sizeof buf, v < 10 ? "%.2f %s" : (v < 100 ? "%.1f %s" : "%.0f %s"), v,
                      kUnits[u]);
  return buf;
}

std::string format_eta(std::chrono::seconds s) {
  const long long t = s.count() < 0 ? 0 : s.count();
  char buf[32];
  if (t >= 3600) {
    (void)std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", t / 3600, t / 60 % 60, t % 60);
  } else {
    (void)std::snprintf(buf, sizeof buf, "%lld:%02lld", t / 60, t % 60);
  }
  return buf;
}

void Progress::start(Clock::time_point now, uint64_t bytes, uint64_t total, std::string replica) {
  samples_.clear();
  samples_.push_back({now, bytes});
  bytes_ = bytes;
  total_ = total;
  replica_ = std::move(replica);
  drawn_.reset();
}

std::optional<std::string> Progress::update(Clock::time_point now, uint64_t bytes) {
  bytes_ = bytes;
  samples_.push_back({now, bytes});
  while (samples_.size() > 2 && now - samples_[1].at >= kWindow) samples_.pop_front();
  if (drawn_ && now - *drawn_ < kRedraw) return std::nullopt;
  drawn_ = now;
  return line(now);
}

std::string Progress::line(Clock::time_point now) const {
  std::string out = format_bytes(bytes_);
  if (total_ != kUnknown) {
    out += " / " + format_bytes(total_);
    const uint64_t pct = total_ == 0 ? 100 : bytes_ * 100 / total_;
    out += "  " + std::to_string(pct > 100 ? 100 : pct) + "%";
  }
  std::optional<double> rate;  // bytes per second
  if (!samples_.empty()) {
    const auto span = std::chrono::duration<double>(now - samples_.front().at).count();
    if (span >= 0.2 && bytes_ >= samples_.front().bytes) {
      rate = static_cast<double>(bytes_ - samples_.front().bytes) / span;
    }
  }
  out += "  " + (rate ? format_bytes(static_cast<uint64_t>(*rate)) + "/s" : std::string("--/s"));
  if (total_ != kUnknown && rate && *rate > 0 && total_ >= bytes_) {
    const long long left = std::llround(static_cast<double>(total_ - bytes_) / *rate);
    out += "  ETA " + format_eta(std::chrono::seconds(left));
  }
  if (!replica_.empty()) out += "  from " + replica_;
  return out;
}

}  // namespace cdn::get
