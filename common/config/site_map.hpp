// SPDX-License-Identifier: MIT
// Which site a request is for, from its Host header (RFC 9110 7.2): host
// names compared without the port, ASCII case folded, a trailing dot
// dropped. Pure; the replica picks its site with it, the balancer the
// replicas of a host.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace cdn::config {

// A Host header value (or a configured host name) as a key: "A.Example:8080"
// and "a.example." both give "a.example"; "[::1]:80" gives "[::1]". nullopt
// when it is empty or holds what no host name or address literal does
// (blanks, '/', '@', a port that is not digits...), so that a malformed Host
// never matches a site.
std::optional<std::string> host_key(std::string_view host);

// Host name -> site index, plus an optional default for other hosts.
class SiteMap {
 public:
  // false (and nothing changed) when `host` is malformed or already mapped.
  bool add(std::string_view host, size_t site);
  void set_default(size_t site) { default_ = site; }
  std::optional<size_t> default_site() const { return default_; }
  // The site of a request's Host header: its own, else the default; nullopt
  // when neither (the replica answers 421 Misdirected Request).
  std::optional<size_t> find(std::string_view host_header) const;
  // Whether the host names a site of its own (not only the default).
  bool names(std::string_view host_header) const;
  size_t size() const { return hosts_.size(); }

 private:
  std::unordered_map<std::string, size_t> hosts_;
  std::optional<size_t> default_;
};

}  // namespace cdn::config
