// SPDX-License-Identifier: MIT
#include "common/uv/handle.hpp"

#include <spdlog/spdlog.h>

namespace cdn::uv::detail {

void report_exception(const char* where, const char* what) noexcept {
  try {
    spdlog::error("exception in libuv {} callback: {}", where, what);
  } catch (...) {
    // Logging itself failed; nothing is left to tell, and nothing may escape.
  }
}

}  // namespace cdn::uv::detail
