// SPDX-License-Identifier: MIT
// The replica's /.cdn/status document: what a replica reports and the
// balancer's prober reads. Pure JSON codec; fuzzed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cdn::status {

enum class State { Starting, Serving, Draining };
std::string_view to_string(State s) noexcept;
std::optional<State> state_from_string(std::string_view s) noexcept;

struct ReplicaStatus {
  std::string name;
  std::string source;  // "root:/srv/site", "page:/srv/a.html", "origin:http://..."
  State state = State::Starting;
  uint64_t active_connections = 0;
  uint64_t capacity = 0;  // connections at which load reaches 1.0
  uint64_t requests_total = 0;
  uint64_t bytes_total = 0;     // body bytes sent
  double bytes_per_second = 0;  // recent send rate
  double load = 0;              // active_connections / capacity (comparable across replicas)
  double uptime_seconds = 0;
  std::string version;
  // Edge cache (origin mode; all 0 for a directory or a page). Added later:
  // decode() leaves them 0 when a replica does not send them.
  uint64_t cache_hits = 0;
  uint64_t cache_misses = 0;
  double cache_hit_ratio = 0;  // hits / (hits + misses)
  uint64_t cache_bytes = 0;    // bytes of cached bodies on disk
  uint64_t cache_objects = 0;
  uint64_t origin_requests_total = 0;
  uint64_t origin_errors_total = 0;
  // Sites (replicad.ini's [site NAME]; "default" for [content]), names
  // separated by blanks, and the host names of the sites other than the
  // default, the same way (lower case, no port). What the balancer routes
  // a Host by: a replica serves the hosts it lists, and every other host
  // when it lists "default" or no site at all (one from before sites).
  std::string sites;
  std::string hosts;
  // Each host of `hosts` with its site, "HOST=SITE" separated by blanks
  // (added later: "" from an older replica): what the balancer labels a
  // request's metrics with.
  std::string host_sites;

  bool operator==(const ReplicaStatus&) const = default;
};

// A status document is a few hundred bytes; anything longer than this is not
// one, and is rejected before parsing (bounds the work a probe answer can cost).
inline constexpr std::size_t kMaxDocumentBytes = 64 * 1024;

// Compact JSON object with every field. Never throws on content: strings that
// are not UTF-8 have the bad bytes replaced (U+FFFD), and non-finite or
// negative figures are written as 0, so encode() output always decodes.
std::string encode(const ReplicaStatus& s);
// nullopt when the text is not a status document (bad JSON, not an object,
// wrong types, missing name/state/load, negative or non-finite figures, longer
// than kMaxDocumentBytes). Unknown keys are ignored (newer replicas may add
// some). Never throws.
std::optional<ReplicaStatus> decode(std::string_view json);

// The two halves of decode(), for the fuzzer and the tests. decode() tries
// decode_fast() and falls back to decode_full() when it answers nullopt.
namespace detail {
// The balancer decodes 10,000 documents a second, all of one shape: a flat
// object of ASCII strings without escapes and plain non-negative numbers. This
// reads exactly that without building a DOM or allocating (beyond the strings
// kept), and answers nullopt ("not sure") for anything else, including every
// document that decode_full() rejects; whatever it accepts, decode_full()
// decodes equal (fuzzed).
std::optional<ReplicaStatus> decode_fast(std::string_view json) noexcept;
// nlohmann's parser and DOM: any JSON.
std::optional<ReplicaStatus> decode_full(std::string_view json);
}  // namespace detail

}  // namespace cdn::status
