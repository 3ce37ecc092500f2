// SPDX-License-Identifier: MIT
// Helpers shared by the harnesses.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace cdn::fuzz {

// A property the code under test promised does not hold: crash so the fuzzer
// (or the corpus replay) reports the input.
[[noreturn]] inline void violated(const char* what) {
  std::fprintf(stderr, "fuzz property violated: %s\n", what);
  std::abort();
}

#define CDN_FUZZ_CHECK(cond)                   \
  do {                                         \
    if (!(cond)) ::cdn::fuzz::violated(#cond); \
  } while (0)

// A split point derived from the input itself, so a seed file is plain
// protocol text (no control prefix) and the fuzzer still explores splits.
inline size_t split_point(std::string_view in) {
  uint32_t h = 2166136261u;
  for (unsigned char c : in) h = (h ^ c) * 16777619u;
  return in.empty() ? 0 : h % (in.size() + 1);
}

inline std::string_view as_view(const uint8_t* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

}  // namespace cdn::fuzz
