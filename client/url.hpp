// SPDX-License-Identifier: MIT
// cdn-get's URLs: parsing the one it is given, and judging the ones a
// redirect names (which of them it may try). Pure: no I/O, no loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cdn::get {

struct Url {
  bool tls = false;  // https://
  std::string host;  // without brackets
  uint16_t port = 80;
  std::string target = "/";       // path + query, as sent
  std::string authority() const;  // host:port for Host and messages
};
// http://host[:port][/path] or https://... (port 443 by default);
// nullopt-like: returns false and sets `error`.
bool parse_url(const std::string& text, Url& out, std::string& error);

// At most this many CDN-Fallback URLs are taken from one answer (the
// balancer's `[balance] fallbacks` goes up to 64).
inline constexpr size_t kMaxFallbacks = 64;

// The URLs a redirect lets cdn-get try, in order: the Location, then the
// CDN-Fallback list. Only the form the balancer writes is taken:
//  - every target is a valid origin-form URI (http::is_uri_target);
//  - the host asked first (the balancer, `may_name_hosts`) may name any host
//    in its Location; each fallback must be an absolute URL with the
//    Location's target, since the balancer sends every replica the same
//    resource (a URL slipped into the list from a request's query cannot
//    have it: it is part of that target);
//  - any other host (a replica adding a directory's slash) may send the
//    client only to itself, and names no fallbacks.
//  - a URL asked over https:// is followed only to https:// URLs: a
//    redirect cannot take the download off TLS.
// So cdn-get contacts no host that the balancer did not name.
struct RedirectTargets {
  std::vector<Url> urls;
  size_t ignored = 0;         // URLs (or list elements) left out
  std::string first_problem;  // why the first of them was left out
};
RedirectTargets redirect_targets(const Url& asked, bool may_name_hosts,
                                 std::optional<std::string_view> location,
                                 std::optional<std::string_view> fallbacks);

}  // namespace cdn::get
