// SPDX-License-Identifier: MIT
// The edge cache's policy as a shared cache (RFC 9111), with RFC 9213
// targeted fields (CDN-Cache-Control) and RFC 5861 stale-while-revalidate /
// stale-if-error: may a response be stored, which of its headers, how long
// is it fresh, what to do with a stored copy for this request, which variant
// a request selects, what a 304 changes, what an unsafe method invalidates.
// Pure: no I/O, no clock (callers pass `now`), so unit tests drive every path.
//
// Glossary. A *stored response* (Stored) is the status, the end-to-end
// header lines as received (RFC 9111 §3.1) and when the request went out and
// the response head came back (§4.2.3); every decision is read from those,
// so nothing parsed is persisted and a reload of the Policy applies to
// copies already on disk. Times are whole seconds since the epoch, durations
// whole seconds. Where a value is malformed the reading errs on the side of
// not serving a stale or private copy: invalid max-age or Expires = stale,
// an unreadable field-name list of no-cache/private = the whole response.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/http/fields.hpp"
#include "common/http/message.hpp"

namespace cdn::replica::cache {

using http::Fields;

// RFC 9111 §1.2.2: delta-seconds too large to represent count as 2^31.
constexpr int64_t kMaxDelta = 2147483648LL;

// ------------------------------------------------------------ the inputs

// Cache-Control directives (RFC 9111 §5.2), response and request ones in one
// type since they share the grammar. Names compare case-insensitively; a
// directive seen twice with different values counts with the smaller one
// (§4.2.1 allows "first" or "stale"; the smaller is never fresher than
// either); unknown directives are ignored.
struct Directives {
  std::optional<int64_t> max_age;   // malformed (`max-age=1.5`, `'1'`, `= 1`) -> 0: stale
  std::optional<int64_t> s_maxage;  // likewise
  std::optional<int64_t> stale_while_revalidate;  // RFC 5861; malformed -> absent
  std::optional<int64_t> stale_if_error;          // RFC 5861; malformed -> absent
  std::optional<int64_t> max_stale;  // request; bare `max-stale` = kMaxDelta (any staleness)
  std::optional<int64_t> min_fresh;  // request
  bool no_store = false;
  bool no_cache = false;                     // unqualified, or a list we could not read
  std::vector<std::string> no_cache_fields;  // no-cache="a, b": lower-cased names
  bool private_ = false;                     // unqualified, or a list we could not read
  std::vector<std::string> private_fields;   // private="x": lower-cased names
  bool public_ = false;
  bool must_revalidate = false;
  bool proxy_revalidate = false;
  bool must_understand = false;
  bool immutable = false;
  bool only_if_cached = false;  // request
};

// Every line named `name` of `fields` read as one Cache-Control list.
Directives parse_cache_control(Fields fields, std::string_view name = "Cache-Control");
// One (combined) value.
Directives parse_cache_control(std::string_view value);
// A targeted field (RFC 9213 §2): an RFC 8941 Dictionary. nullopt when the
// field is absent, empty, not a valid Dictionary, or a known directive has
// the wrong type (`max-age="10"`): then the field is ignored whole.
std::optional<Directives> parse_targeted(Fields fields, std::string_view name);

// `Age` (RFC 9111 §5.1): the first member of the first line, a non-negative
// integer (`7200.0`, `-1`, `1;x=y` are invalid); capped at kMaxDelta.
// nullopt when absent or invalid (the response is then taken as age 0).
std::optional<int64_t> parse_age(Fields fields);
// `Expires` (§5.3): nullopt when absent; a time in the past (kExpired) when
// invalid or when several lines disagree. `now` only places RFC 850's
// two-digit years (RFC 9110 §5.6.7).
constexpr int64_t kExpired = INT64_MIN / 4;
std::optional<int64_t> parse_expires(Fields fields, int64_t now);
// `Date` (RFC 9110 §6.6.1), any of the three HTTP-date forms; nullopt when
// absent or invalid.
std::optional<int64_t> parse_date(Fields fields, std::string_view name, int64_t now);

// What the operator configured. Every override is off unless set: by
// default the cache grants no freshness and no staleness the origin did not.
struct Policy {
  // Freshness of a storable response that states none (in place of the
  // heuristic of §4.2.2; only where a heuristic would be allowed).
  std::optional<int64_t> default_ttl;
  // Used when the response has no directive of that name (RFC 5861).
  std::optional<int64_t> stale_while_revalidate;
  std::optional<int64_t> stale_if_error;
  // Heuristic freshness (§4.2.2): this percent of the time since
  // Last-Modified, at most heuristic_cap seconds (0: no heuristic).
  int heuristic_percent = 10;
  int64_t heuristic_cap = 86400;
  // RFC 9213: one targeted field of the operator's choosing (e.g.
  // "Acme-CDN-Cache-Control"), read before CDN-Cache-Control; "" = none.
  std::string targeted_field;
  // 206 responses are stored only by a cache that combines them (§3.3, §3.4).
  bool store_partial = false;
  // How long past freshness a copy may answer while the origin cannot be
  // reached at all (refused, reset, closed without an answer, timed out):
  // §4.2.4 lets a disconnected cache serve stale unless the response forbids
  // it. Bounded, so a long outage does not serve week-old copies; an origin
  // 5xx is not a disconnection (that is stale-if-error's).
  int64_t stale_if_disconnected = 86400;
};

// The directives that govern a response here: the first valid targeted field
// (the operator's, then CDN-Cache-Control), else Cache-Control (RFC 9213
// §2.1). `targeted`: a targeted field governs, so Cache-Control and Expires
// are ignored for this cache (but still forwarded).
struct Governing {
  Directives d;
  bool targeted = false;
};
Governing governing(Fields response, const Policy& p);

// ------------------------------------------------------------ storing

struct Stored {
  int status = 200;
  std::vector<http::Header> headers;  // end-to-end lines, as stored (storable_headers)
  int64_t request_time = 0;           // when the request that got it went out
  int64_t response_time = 0;          // when its head arrived
  std::string variant;                // variant_key() of the request that got it
};

// Why a response may not be stored (RFC 9111 §3); Storable when it may.
enum class Verdict {
  Storable,
  Method,         // only GET responses are stored (HEAD ones only freshen, §4.3.5)
  Status,         // not final, 304, 206 without store_partial, or must-understand
                  // on a status this cache does not understand (§5.2.2.3)
  NoStore,        // no-store in the response, or in the request (§5.2.1.5)
  Private,        // private (§5.2.2.7: a shared cache)
  Authorization,  // request had Authorization, response lacks public /
                  // must-revalidate / s-maxage (§3.5)
  VaryAll,        // Vary: * can never be selected (§4.1)
  NotCacheable,   // no explicit freshness, status not heuristically cacheable, not public
};
std::string_view to_string(Verdict v);

Verdict storable(std::string_view method, Fields request, int status, Fields response,
                 const Policy& p);
// The heuristically cacheable statuses (RFC 9110 §15.1): 200 203 204 206 300
// 301 308 404 405 410 414 501.
bool heuristically_cacheable(int status);
// What is stored of a storable response's header: without hop-by-hop lines
// (§3.1) and without the fields named by private="..." / no-cache="..."
// (§5.2.2.4, §5.2.2.7: we never reuse them, so they are never kept).
std::vector<http::Header> storable_headers(Fields response, const Policy& p);

// ------------------------------------------------------------ freshness

// Freshness lifetime (§4.2.1): s-maxage, max-age, Expires - Date (none of
// those when a targeted field governs: its own max-age), else default_ttl or
// the heuristic (§4.2.2) where permitted, else 0.
int64_t freshness_lifetime(const Stored& s, const Policy& p);
// Whether the lifetime comes from the heuristic or default_ttl (§4.2.2).
bool heuristic(const Stored& s, const Policy& p);
// Current age (§4.2.3): age_value, date_value, request_time, response_time.
int64_t current_age(const Stored& s, int64_t now);

enum class Action {
  Fresh,            // serve it
  StaleRevalidate,  // serve it, and refresh it in the background (stale-while-revalidate)
  Stale,            // serve it stale: the request allowed it (max-stale)
  Revalidate,       // ask the origin first (conditional request); serve only after
  GatewayTimeout,   // request said only-if-cached and this copy may not be used: 504
};
std::string_view to_string(Action a);
// Without a request: what a copy is good for (prefetch, background work).
Action decide(const Stored& s, const Policy& p, int64_t now);
// For a request: its Cache-Control (§5.2.1: max-age, min-fresh, max-stale,
// no-cache, only-if-cached; Pragma: no-cache when it has no Cache-Control)
// narrows or widens what the response allows. Must-revalidate and friends
// still forbid serving stale.
Action decide(const Stored& s, const Policy& p, int64_t now, Fields request);
// The origin failed (unreachable, timeout, 500/502/503/504): may this copy
// answer (stale-if-error, §4.2.4)? A fresh copy always may.
bool usable_on_error(const Stored& s, const Policy& p, int64_t now);
// The origin could not be reached (§4.2.4, disconnected): may this copy
// answer? A fresh one may; a stale one within stale_if_disconnected (or its
// stale-if-error, when longer), unless the response forbids serving stale.
bool usable_when_disconnected(const Stored& s, const Policy& p, int64_t now);
// Whether a stale copy may be served at all (§4.2.4): not with no-cache,
// must-revalidate, proxy-revalidate or s-maxage (a shared cache).
bool may_serve_stale(const Stored& s, const Policy& p);

// ------------------------------------------------------------ variants

// The secondary cache key (§4.1) of `request` for a response with these
// `Vary` lines: each named request field, names lower-cased and sorted, its
// lines combined, whitespace around commas folded, Accept-Encoding's and
// Accept-Language's members lower-cased and sorted; a field the request lacks differs from an empty
// one. nullopt for `Vary: *`, which no request matches. "" with no Vary.
std::optional<std::string> variant_key(Fields response, Fields request);
// Whether `request` selects this stored response (its `variant` key).
bool variant_matches(const Stored& s, Fields request);

// ------------------------------------------------------------ 304, invalidation

// Whether a 304 applies to this stored response (§4.3.4): with an ETag it
// must equal the stored one (byte for byte: a weak one only refreshes the
// response that carried it); else with a Last-Modified it must equal the
// stored one; with neither it applies (to the one response we asked about).
// When false, the stored copy is not the one the origin means: drop it.
bool not_modified_applies(Fields stored, Fields not_modified);
// A 304 answered our conditional request (§4.3.4): the stored headers with
// each field of the 304 replacing all stored lines of that name, except
// Content-Length (it describes our body, not theirs) and hop-by-hop lines.
std::vector<http::Header> updated_headers(Fields stored, Fields not_modified);
// The whole stored response after that 304: headers updated, new times.
Stored refreshed(const Stored& old, Fields not_modified, int64_t request_time,
                 int64_t response_time);

// The cache key of an origin-form request-target, the way Pull keys objects:
// the normalised path %-encoded, plus "?query"; nullopt for a path that
// normalize_path refuses.
std::optional<std::string> cache_key(std::string_view target);
// The header lines to answer with from the cache at `now`: the stored ones
// with `Age` set to current_age() (§5.1: the one Age line, ours).
std::vector<http::Header> served_headers(const Stored& s, int64_t now);

// GET, HEAD, OPTIONS, TRACE (RFC 9110 §9.2.1).
bool is_safe(std::string_view method);
// After an unsafe request got a non-error answer (2xx/3xx), what to drop
// from the cache (§4.4): the target, and Location / Content-Location when
// they are on the same origin (relative ones resolved against the target),
// each as a cache_key(); every variant of each key is to go.
// `target` is the request's origin-form target, `authority` its Host.
std::vector<std::string> invalidation_targets(std::string_view method, int status,
                                              std::string_view target, std::string_view authority,
                                              Fields response);

}  // namespace cdn::replica::cache
