// SPDX-License-Identifier: MIT
// The edge cache's policy (RFC 9111 HTTP caching, RFC 5861 stale-while-
// revalidate / stale-if-error): may a response be stored, how long is it
// fresh, and what to do with a stored copy now. Pure: no I/O, no clock
// (callers pass `now`), so unit tests drive every path directly.
//
// Times are whole seconds since the epoch, durations whole seconds; -1
// means "absent" where a header may be missing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cdn::replica::cache {

// The response directives of a Cache-Control value (RFC 9111 5.2.2) that a
// shared cache acts on. Unknown directives are ignored; a malformed
// delta-seconds makes its directive absent (max-age: treated as stale, 4.2.1).
struct Directives {
  std::optional<int64_t> max_age;
  std::optional<int64_t> s_maxage;
  std::optional<int64_t> stale_while_revalidate;
  std::optional<int64_t> stale_if_error;
  bool no_store = false;
  bool no_cache = false;  // the field-name form (no-cache="x") is treated as the whole response
  bool private_ = false;  // likewise private="x"
  bool public_ = false;
  bool must_revalidate = false;  // also set by proxy-revalidate (we are a shared cache)
  bool malformed_max_age = false;
};
Directives parse_cache_control(std::string_view value);

// What the operator configured, applied when a response states nothing.
struct Policy {
  int64_t default_ttl = 60;
  int64_t stale_while_revalidate = 10;
  int64_t stale_if_error = 86400;
};

// The parts of a stored response its freshness depends on, with when it
// was requested and received (RFC 9111 4.2.3).
struct Stored {
  int status = 200;
  std::string cache_control;
  int64_t date = -1;          // Date header
  int64_t expires = -1;       // Expires header; -2 when present but invalid (= already expired)
  int64_t age = 0;            // Age header as received
  int64_t request_time = 0;   // when we sent the request
  int64_t response_time = 0;  // when its head arrived
};

// May a shared cache store this response (RFC 9111 3)? Only 200 here:
// other statuses are passed through, not stored.
bool storable(const Stored& s);

// Freshness lifetime in seconds (RFC 9111 4.2.1): s-maxage, max-age,
// Expires - Date, else the policy's default TTL.
int64_t freshness_lifetime(const Stored& s, const Policy& p);

// Current age in seconds (RFC 9111 4.2.3).
int64_t current_age(const Stored& s, int64_t now);

enum class Action {
  Fresh,            // serve it
  StaleRevalidate,  // serve it, and refresh it in the background (stale-while-revalidate)
  Revalidate,       // ask the origin first (conditional request); serve only after
};
Action decide(const Stored& s, const Policy& p, int64_t now);

// The origin failed (unreachable, timeout, 5xx): may this stale copy be
// served (stale-if-error)? A fresh copy always may.
bool usable_on_error(const Stored& s, const Policy& p, int64_t now);

// A 304 answered our conditional request: the stored response with the
// 304's freshness headers (RFC 9111 4.3.4). Empty / -1 fields in `fresh`
// keep the stored values; Cache-Control, Date, Expires and Age are taken
// from the 304 when it has them.
Stored refreshed(const Stored& old, const Stored& fresh, bool has_cache_control, bool has_expires);

// Parses an Expires value the way 5.3 asks: an invalid date means "already
// expired" (-2); absent is -1.
int64_t parse_expires(std::optional<std::string_view> value);

}  // namespace cdn::replica::cache
