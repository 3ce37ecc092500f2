// SPDX-License-Identifier: MIT
#include "common/config/site_map.hpp"

#include <algorithm>

#include "common/text/text.hpp"

namespace cdn::config {

namespace {

// RFC 3986 reg-name characters (unreserved and sub-delims) less the few that
// no DNS name holds and that only make a Host ambiguous.
bool name_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

bool digits(std::string_view s) {
  return !s.empty() && s.size() <= 5 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

std::optional<std::string> host_key(std::string_view host) {
  host = text::trim_ows(host);
  // 255: a DNS name's bound (RFC 1035 2.3.4), with room for a port.
  if (host.empty() || host.size() > 261) return std::nullopt;
  std::string_view name;
  if (host.front() == '[') {
    const size_t close = host.find(']');
    if (close == std::string_view::npos || close < 2) return std::nullopt;
    name = host.substr(0, close + 1);
    const std::string_view rest = host.substr(close + 1);
    if (!rest.empty() && (rest.front() != ':' || !digits(rest.substr(1)))) return std::nullopt;
    const std::string_view inside = name.substr(1, name.size() - 2);
    if (!std::all_of(inside.begin(), inside.end(), [](char c) {
          return c == ':' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                 (c >= 'A' && c <= 'F');
        })) {
      return std::nullopt;
    }
  } else {
    name = host;
    if (const size_t colon = host.find(':'); colon != std::string_view::npos) {
      if (!digits(host.substr(colon + 1))) return std::nullopt;
      name = host.substr(0, colon);
    }
    if (name.ends_with('.')) name.remove_suffix(1);
    if (name.empty() || name.size() > 253 || !std::all_of(name.begin(), name.end(), name_char)) {
      return std::nullopt;
    }
  }
  return text::lowered(name);
}

bool SiteMap::add(std::string_view host, size_t site) {
  auto key = host_key(host);
  if (!key) return false;
  return hosts_.emplace(std::move(*key), site).second;
}

std::optional<size_t> SiteMap::find(std::string_view host_header) const {
  // A replica of one site: no Host to read (and nothing allocated per request).
  if (hosts_.empty()) return default_;
  if (const auto key = host_key(host_header)) {
    if (const auto it = hosts_.find(*key); it != hosts_.end()) return it->second;
  }
  return default_;
}

bool SiteMap::names(std::string_view host_header) const {
  const auto key = host_key(host_header);
  return key && hosts_.count(*key) > 0;
}

}  // namespace cdn::config
