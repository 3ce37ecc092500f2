// SPDX-License-Identifier: MIT
#include "daemons/replicad/cache.hpp"

#include <algorithm>
#include <charconv>

#include "common/http/serialize.hpp"

namespace cdn::replica::cache {
namespace {

constexpr std::string_view kSpace = " \t";
// RFC 9111 1.2.2: delta-seconds too large to represent are taken as 2^31.
constexpr int64_t kMaxDelta = 2147483648LL;

std::string_view trim(std::string_view s) {
  const size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(kSpace);
  return s.substr(b, e - b + 1);
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// delta-seconds = 1*DIGIT, optionally quoted (senders must not, recipients may accept).
std::optional<int64_t> delta_seconds(std::string_view v) {
  v = trim(v);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  if (v.empty()) return std::nullopt;
  for (const char c : v) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  if (v.size() > 10) return kMaxDelta;
  int64_t n = 0;
  std::from_chars(v.data(), v.data() + v.size(), n);
  return std::min(n, kMaxDelta);
}

}  // namespace

Directives parse_cache_control(std::string_view value) {
  Directives d;
  size_t pos = 0;
  while (pos <= value.size()) {
    // Split on commas outside quoted strings.
    size_t end = pos;
    bool quoted = false;
    while (end < value.size() && (quoted || value[end] != ',')) {
      if (value[end] == '"') quoted = !quoted;
      if (quoted && value[end] == '\\') ++end;
      ++end;
    }
    const std::string_view item = trim(value.substr(pos, std::min(end, value.size()) - pos));
    pos = end + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    const std::string_view name = trim(item.substr(0, eq));
    const bool has_arg = eq != std::string_view::npos;
    const std::string_view arg = has_arg ? item.substr(eq + 1) : std::string_view{};
    if (iequals(name, "max-age")) {
      d.max_age = has_arg ? delta_seconds(arg) : std::nullopt;
      if (!d.max_age) d.malformed_max_age = true;
    } else if (iequals(name, "s-maxage")) {
      if (has_arg) d.s_maxage = delta_seconds(arg);
    } else if (iequals(name, "stale-while-revalidate")) {
      if (has_arg) d.stale_while_revalidate = delta_seconds(arg);
    } else if (iequals(name, "stale-if-error")) {
      if (has_arg) d.stale_if_error = delta_seconds(arg);
    } else if (iequals(name, "no-store")) {
      d.no_store = true;
    } else if (iequals(name, "no-cache")) {
      d.no_cache = true;
    } else if (iequals(name, "private")) {
      d.private_ = true;
    } else if (iequals(name, "public")) {
      d.public_ = true;
    } else if (iequals(name, "must-revalidate") || iequals(name, "proxy-revalidate")) {
      d.must_revalidate = true;
    }
  }
  return d;
}

bool storable(const Stored& s) {
  if (s.status != 200) return false;
  const Directives d = parse_cache_control(s.cache_control);
  return !d.no_store && !d.private_;
}

int64_t freshness_lifetime(const Stored& s, const Policy& p) {
  const Directives d = parse_cache_control(s.cache_control);
  if (d.s_maxage) return *d.s_maxage;
  if (d.max_age) return *d.max_age;
  if (d.malformed_max_age) return 0;
  if (s.expires == -2) return 0;
  if (s.expires >= 0) {
    const int64_t date = s.date >= 0 ? s.date : s.response_time;
    return std::max<int64_t>(0, s.expires - date);
  }
  return std::max<int64_t>(0, p.default_ttl);
}

int64_t current_age(const Stored& s, int64_t now) {
  const int64_t apparent_age = s.date >= 0 ? std::max<int64_t>(0, s.response_time - s.date) : 0;
  const int64_t response_delay = std::max<int64_t>(0, s.response_time - s.request_time);
  const int64_t corrected_age_value = std::max<int64_t>(0, s.age) + response_delay;
  const int64_t corrected_initial_age = std::max(apparent_age, corrected_age_value);
  const int64_t resident_time = std::max<int64_t>(0, now - s.response_time);
  return corrected_initial_age + resident_time;
}

Action decide(const Stored& s, const Policy& p, int64_t now) {
  const Directives d = parse_cache_control(s.cache_control);
  if (d.no_cache) return Action::Revalidate;
  const int64_t lifetime = freshness_lifetime(s, p);
  const int64_t age = current_age(s, now);
  if (age < lifetime) return Action::Fresh;
  if (d.must_revalidate || d.s_maxage) return Action::Revalidate;  // s-maxage implies it (5.2.2.10)
  const int64_t swr = d.stale_while_revalidate.value_or(p.stale_while_revalidate);
  if (age < lifetime + swr) return Action::StaleRevalidate;
  return Action::Revalidate;
}

bool usable_on_error(const Stored& s, const Policy& p, int64_t now) {
  const Directives d = parse_cache_control(s.cache_control);
  const int64_t lifetime = freshness_lifetime(s, p);
  const int64_t age = current_age(s, now);
  if (age < lifetime && !d.no_cache) return true;
  if (d.must_revalidate || d.s_maxage || d.no_cache) return false;
  const int64_t sie = d.stale_if_error.value_or(p.stale_if_error);
  return age < lifetime + sie;
}

Stored refreshed(const Stored& old, const Stored& fresh, bool has_cache_control, bool has_expires) {
  Stored s = old;
  if (has_cache_control) s.cache_control = fresh.cache_control;
  if (has_expires) s.expires = fresh.expires;
  s.date = fresh.date;
  s.age = fresh.age;
  s.request_time = fresh.request_time;
  s.response_time = fresh.response_time;
  return s;
}

int64_t parse_expires(std::optional<std::string_view> value) {
  if (!value) return -1;
  const int64_t t = http::parse_http_date(trim(*value));
  return t >= 0 ? t : -2;
}

}  // namespace cdn::replica::cache
