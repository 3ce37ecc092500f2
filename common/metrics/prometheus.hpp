// SPDX-License-Identifier: MIT
// The Prometheus text exposition format (version 0.0.4), written once for
// both daemons' /.cdn/metrics. Pure: appends to a string the caller owns, so
// a large page can be reserved up front and handed to the write uncopied.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <unordered_set>

namespace cdn::metrics {

enum class Type { Counter, Gauge };

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

  // A family with one unlabelled sample.
  template <typename T>
  void metric(std::string_view name, Type type, std::string_view help, T value) {
    family(name, type, help);
    sample(value);
  }

 private:
  void sample_head(std::initializer_list<Label> labels);

  std::string& out_;
  std::string current_;  // the family samples belong to
  std::unordered_set<std::string> seen_;
};

// A value as Prometheus reads it: "NaN", "+Inf", "-Inf", or the shortest
// decimal that reads back as the same double.
std::string format_value(double v);

}  // namespace cdn::metrics
