// SPDX-License-Identifier: MIT
// The balancer decodes whatever a replica (or anything listening on its
// address) answers: decode must never throw or crash, what it accepts must
// survive an encode/decode round trip, and its fast path must agree with the
// full decoder on every document it accepts.
#include <cstdint>
#include <string>

#include "common/status/status.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto text = cdn::fuzz::as_view(data, size);
  const auto fast = cdn::status::detail::decode_fast(text);
  const auto full = cdn::status::detail::decode_full(text);
  if (fast) {
    CDN_FUZZ_CHECK(full.has_value());
    CDN_FUZZ_CHECK(*fast == *full);
  }
  const auto s = cdn::status::decode(text);
  CDN_FUZZ_CHECK(s.has_value() == full.has_value());
  if (!s) return 0;
  CDN_FUZZ_CHECK(*s == *full);
  const auto again = cdn::status::decode(cdn::status::encode(*s));
  CDN_FUZZ_CHECK(again.has_value());
  CDN_FUZZ_CHECK(again->name == s->name);
  CDN_FUZZ_CHECK(again->state == s->state);
  CDN_FUZZ_CHECK(again->active_connections == s->active_connections);
  return 0;
}
