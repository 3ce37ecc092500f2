// SPDX-License-Identifier: MIT
#include "client/url.hpp"

#include <charconv>

#include "common/http/message.hpp"
#include "common/http/path.hpp"
#include "common/text/text.hpp"

namespace cdn::get {

std::string Url::authority() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

bool parse_url(const std::string& text, Url& out, std::string& error) {
  std::string_view s = text;
  if (s.starts_with("http://")) {
    out.tls = false;
  } else if (s.starts_with("https://")) {
    out.tls = true;
  } else {
    error = "'" + text + "': only http:// and https:// URLs are supported";
    return false;
  }
  s.remove_prefix(out.tls ? 8 : 7);
  const size_t slash = s.find('/');
  std::string_view authority = s.substr(0, slash);
  out.target = slash == std::string_view::npos ? "/" : std::string(s.substr(slash));
  out.port = out.tls ? 443 : 80;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      error = "'" + text + "': unclosed [ in the host";
      return false;
    }
    out.host = std::string(authority.substr(1, close - 1));
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') {
        error = "'" + text + "': junk after the host";
        return false;
      }
      port = authority.substr(close + 2);
    }
  } else {
    const size_t colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (out.host.empty()) {
    error = "'" + text + "': no host";
    return false;
  }
  if (!port.empty()) {
    unsigned v = 0;
    const auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
    if (ec != std::errc() || p != port.data() + port.size() || v == 0 || v > 65535) {
      error = "'" + text + "': bad port";
      return false;
    }
    out.port = static_cast<uint16_t>(v);
  }
  for (char c : out.target) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      error = "'" + text + "': spaces or control characters in the path";
      return false;
    }
  }
  return true;
}

namespace {

using text::trim_ows;

// A URL from an answer, quoted for a message on a terminal: bytes outside
// printable ASCII as \xNN, and no more than 100 of them.
std::string quoted(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  constexpr size_t kLimit = 100;
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < kLimit; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      out.append("\\x").push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  if (s.size() > kLimit) out.append("...");
  return out + "'";
}

bool same_authority(const Url& a, const Url& b) {
  return a.tls == b.tls && a.port == b.port && http::iequals(a.host, b.host);
}

// An absolute http:// or https:// URL with a valid origin-form target, and
// https:// when `asked` was (no redirect takes a download off TLS); false
// and `why` otherwise.
bool absolute_url(std::string_view text, const Url& asked, Url& out, std::string& why) {
  if (!text.starts_with("http://") && !text.starts_with("https://")) {
    why = quoted(text) + " is not an absolute http:// or https:// URL";
    return false;
  }
  std::string err;
  if (!parse_url(std::string(text), out, err) || !http::is_uri_target(out.target)) {
    why = quoted(text) + " is not a valid URL";
    return false;
  }
  if (asked.tls && !out.tls) {
    why = quoted(text) + " is not https:// (the download started over TLS stays on it)";
    return false;
  }
  return true;
}

}  // namespace

RedirectTargets redirect_targets(const Url& asked, bool may_name_hosts,
                                 std::optional<std::string_view> location,
                                 std::optional<std::string_view> fallbacks) {
  RedirectTargets out;
  auto ignore = [&out](std::string why) {
    if (out.ignored++ == 0) out.first_problem = std::move(why);
  };
  std::optional<Url> first;
  if (location) {
    const std::string_view text = trim_ows(*location);
    Url u;
    std::string why;
    if (text.starts_with('/') && !text.starts_with("//")) {
      // A relative redirect: the same host, another target.
      u = asked;
      u.target = std::string(text);
      if (!http::is_uri_target(u.target)) {
        ignore("Location " + quoted(text) + " is not a valid URI");
      } else {
        first = std::move(u);
      }
    } else if (!absolute_url(text, asked, u, why)) {
      ignore("Location " + why);
    } else if (!may_name_hosts && !same_authority(u, asked)) {
      ignore("Location " + quoted(text) + ": " + asked.authority() +
             " is not the balancer and may not name another host");
    } else {
      first = std::move(u);
    }
  }
  if (first) out.urls.push_back(*first);
  if (!fallbacks) return out;

  size_t taken = 0;
  std::string_view list = *fallbacks;
  for (;;) {
    const size_t comma = list.find(',');
    const std::string_view element = trim_ows(list.substr(0, comma));
    if (!element.empty()) {
      Url u;
      std::string why;
      if (!may_name_hosts) {
        ignore("CDN-Fallback from " + asked.authority() + ", which is not the balancer");
      } else if (!first) {
        ignore("CDN-Fallback " + quoted(element) + " without a usable Location");
      } else if (taken == kMaxFallbacks) {
        ignore("CDN-Fallback names more than " + std::to_string(kMaxFallbacks) + " URLs");
      } else if (!absolute_url(element, asked, u, why)) {
        ignore("CDN-Fallback " + why);
      } else if (u.target != first->target) {
        ignore("CDN-Fallback " + quoted(element) + " is not the Location's resource " +
               quoted(first->target));
      } else {
        out.urls.push_back(std::move(u));
        ++taken;
      }
    }
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace cdn::get
