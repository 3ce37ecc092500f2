// SPDX-License-Identifier: MIT
// The Prometheus text exposition format (version 0.0.4), written once for
// both daemons' /.cdn/metrics. Pure: appends to a string the caller owns, so
// a large page can be reserved up front and handed to the write uncopied.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>

#include "common/metrics/counter.hpp"

namespace cdn::metrics {

enum class Type { Counter, Gauge, Histogram };

// A distribution over fixed buckets (Prometheus's histogram): counts per
// bucket, their sum and number. Plain counters, not atomic: each loop
// thread keeps its own and a page adds them up (merge()).
class Histogram {
 public:
  // Request durations, in seconds: from a memory hit on loopback (tens of
  // microseconds) to an origin's timeout.
  static constexpr std::array<double, 14> kDurationBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 10};

  explicit Histogram(std::span<const double> bounds = kDurationBuckets);
  Histogram(const Histogram& other);
  Histogram& operator=(const Histogram&) = delete;
  // One thread observes; any thread may read (or merge from) it meanwhile,
  // as the pages served by one worker add up every worker's histogram.
  void observe(double v);
  void merge(const Histogram& other);  // same bounds (asserted)

  std::span<const double> bounds() const { return bounds_; }
  // Observations <= bounds()[i] and > bounds()[i-1]; i == bounds().size()
  // for those above the last bound. Not cumulative.
  uint64_t bucket(size_t i) const { return counts_[i]; }
  double sum() const { return sum_.load(std::memory_order_relaxed); }
  uint64_t count() const { return count_; }

 private:
  std::span<const double> bounds_;
  std::array<OwnCounter, 32> counts_{};
  std::atomic<double> sum_{0};
  OwnCounter count_ = 0;
};

struct Label {
  std::string_view name;   // [a-zA-Z_][a-zA-Z0-9_]*, a literal of ours
  std::string_view value;  // any bytes; escaped on output
};

// One page. Prometheus wants each family's HELP and TYPE once, followed by
// all of its samples: family() writes the two lines, sample() the samples of
// the family last started. Starting a family twice is a bug of the caller
// (asserted); names are the callers' literals, so they are only asserted too.
class PrometheusWriter {
 public:
  explicit PrometheusWriter(std::string& out) : out_(out) {}

  void family(std::string_view name, Type type, std::string_view help);
  void sample(double value) { sample({}, value); }
  void sample(uint64_t value) { sample({}, value); }
  void sample(std::initializer_list<Label> labels, double value);
  // Counters are integers: written exactly, beyond the 2^53 a double holds.
  void sample(std::initializer_list<Label> labels, uint64_t value);

  // A histogram family's samples for one set of labels: NAME_bucket{le=...}
  // (cumulative, up to le="+Inf"), NAME_sum and NAME_count.
  void histogram(std::initializer_list<Label> labels, const Histogram& h);

  // A family with one unlabelled sample.
  template <typename T>
  void metric(std::string_view name, Type type, std::string_view help, T value) {
    family(name, type, help);
    sample(value);
  }

 private:
  void sample_head(std::initializer_list<Label> labels, std::string_view suffix = {},
                   const Label* extra = nullptr);

  std::string& out_;
  std::string current_;  // the family samples belong to
  std::unordered_set<std::string> seen_;
};

// A value as Prometheus reads it: "NaN", "+Inf", "-Inf", or the shortest
// decimal that reads back as the same double.
std::string format_value(double v);

}  // namespace cdn::metrics
