// SPDX-License-Identifier: MIT
// Single byte-range requests (RFC 9110 14.2). Pure.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace cdn::replica {

struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

enum class RangeKind { None, Satisfiable, Unsatisfiable };

struct RangeResult {
  RangeKind kind = RangeKind::None;
  ByteRange range;
};

// `header` is the Range value. Multiple ranges and unknown units are served
// as a whole (RangeKind::None), which RFC 9110 allows.
RangeResult parse_range(std::string_view header, uint64_t size);

}  // namespace cdn::replica
