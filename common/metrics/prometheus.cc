// SPDX-License-Identifier: MIT
#include "common/metrics/prometheus.hpp"

#include <fmt/format.h>

#include <cassert>
#include <cmath>

namespace cdn::metrics {

namespace {

[[maybe_unused]] bool valid_name(std::string_view name, bool colon_allowed) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon_allowed && c == ':');
    if (!letter && (i == 0 || c < '0' || c > '9')) return false;
  }
  return true;
}

// HELP text escapes backslash and line feed; label values also '"'.
void append_escaped(std::string& out, std::string_view s, bool quote) {
  for (const char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out.push_back(c);
    }
  }
}

}  // namespace

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

void PrometheusWriter::family(std::string_view name, Type type, std::string_view help) {
  assert(valid_name(name, true));
  [[maybe_unused]] const bool first = seen_.emplace(name).second;
  assert(first && "a family is written once per page");
  current_.assign(name);
  out_ += "# HELP ";
  out_ += name;
  out_.push_back(' ');
  append_escaped(out_, help, false);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += type == Type::Counter ? " counter\n" : type == Type::Gauge ? " gauge\n" : " histogram\n";
}

void PrometheusWriter::sample_head(std::initializer_list<Label> labels, std::string_view suffix,
                                   const Label* extra) {
  assert(!current_.empty() && "sample() before family()");
  out_ += current_;
  out_ += suffix;
  if (labels.size() == 0 && extra == nullptr) {
    out_.push_back(' ');
    return;
  }
  char sep = '{';
  auto label = [&](const Label& l) {
    assert(valid_name(l.name, false));
    out_.push_back(sep);
    sep = ',';
    out_ += l.name;
    out_ += "=\"";
    append_escaped(out_, l.value, true);
    out_.push_back('"');
  };
  for (const Label& l : labels) label(l);
  if (extra != nullptr) label(*extra);
  out_ += "} ";
}

void PrometheusWriter::histogram(std::initializer_list<Label> labels, const Histogram& h) {
  uint64_t cumulative = 0;
  const auto bounds = h.bounds();
  for (size_t i = 0; i <= bounds.size(); ++i) {
    cumulative += h.bucket(i);
    const std::string le = i < bounds.size() ? format_value(bounds[i]) : std::string("+Inf");
    const Label l{"le", le};
    sample_head(labels, "_bucket", &l);
    fmt::format_to(std::back_inserter(out_), "{}\n", cumulative);
  }
  sample_head(labels, "_sum");
  out_ += format_value(h.sum());
  out_.push_back('\n');
  sample_head(labels, "_count");
  fmt::format_to(std::back_inserter(out_), "{}\n", h.count());
}

Histogram::Histogram(std::span<const double> bounds) : bounds_(bounds) {
  assert(bounds.size() < counts_.size());
}

Histogram::Histogram(const Histogram& other) : bounds_(other.bounds_) { merge(other); }

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_.store(sum() + v, std::memory_order_relaxed);
  ++count_;
}

void Histogram::merge(const Histogram& other) {
  assert(other.bounds_.size() == bounds_.size());
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i] += other.bucket(i);
  sum_.store(sum() + other.sum(), std::memory_order_relaxed);
  count_ += other.count();
}

void PrometheusWriter::sample(std::initializer_list<Label> labels, double value) {
  sample_head(labels);
  out_ += format_value(value);
  out_.push_back('\n');
}

void PrometheusWriter::sample(std::initializer_list<Label> labels, uint64_t value) {
  sample_head(labels);
  fmt::format_to(std::back_inserter(out_), "{}\n", value);
}

}  // namespace cdn::metrics
