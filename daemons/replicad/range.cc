// SPDX-License-Identifier: MIT
#include "daemons/replicad/range.hpp"

#include <charconv>

#include "common/text/text.hpp"

namespace cdn::replica {

namespace {

std::optional<uint64_t> number(std::string_view s) {
  if (s.empty()) return std::nullopt;
  uint64_t v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}
}  // namespace

RangeResult parse_range(std::string_view header, uint64_t size) {
  header = text::trim_ows(header);
  constexpr std::string_view kUnit = "bytes=";
  if (header.size() < kUnit.size()) return {};
  for (size_t i = 0; i < kUnit.size(); ++i) {
    const char c = header[i];
    if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != kUnit[i]) return {};
  }
  const std::string_view spec = text::trim_ows(header.substr(kUnit.size()));
  if (spec.find(',') != std::string_view::npos) return {};
  const size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return {};
  const std::string_view first = text::trim_ows(spec.substr(0, dash));
  const std::string_view last = text::trim_ows(spec.substr(dash + 1));
  if (first.empty()) {
    // Suffix range: the last N bytes.
    const auto n = number(last);
    if (!n) return {};
    if (*n == 0 || size == 0) return {RangeKind::Unsatisfiable, {}};
    const uint64_t len = *n < size ? *n : size;
    return {RangeKind::Satisfiable, {size - len, len}};
  }
  const auto start = number(first);
  if (!start) return {};
  std::optional<uint64_t> end;
  if (!last.empty()) {
    end = number(last);
    if (!end || *end < *start) return {};
  }
  if (*start >= size) return {RangeKind::Unsatisfiable, {}};
  const uint64_t stop = (!end || *end >= size) ? size - 1 : *end;
  return {RangeKind::Satisfiable, {*start, stop - *start + 1}};
}

}  // namespace cdn::replica
