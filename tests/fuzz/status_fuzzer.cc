// The balancer decodes whatever a replica (or anything listening on its
// address) answers: decode must never throw or crash, and what it accepts
// must survive an encode/decode round trip.
#include <cstdint>
#include <string>

#include "common/status/status.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto s = cdn::status::decode(cdn::fuzz::as_view(data, size));
  if (!s) return 0;
  const auto again = cdn::status::decode(cdn::status::encode(*s));
  CDN_FUZZ_CHECK(again.has_value());
  CDN_FUZZ_CHECK(again->name == s->name);
  CDN_FUZZ_CHECK(again->state == s->state);
  CDN_FUZZ_CHECK(again->active_connections == s->active_connections);
  return 0;
}
