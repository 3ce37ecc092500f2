// SPDX-License-Identifier: MIT
#include "daemons/replicad/cache.hpp"

#include <algorithm>
#include <array>

#include "common/http/path.hpp"
#include "common/http/serialize.hpp"
#include "common/http/structured.hpp"

namespace cdn::replica::cache {
namespace {

using http::iequals;

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return http::is_token_char(static_cast<unsigned char>(c));
  });
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// 1*DIGIT, capped at kMaxDelta (§1.2.2).
std::optional<int64_t> digits_value(std::string_view s) {
  if (!all_digits(s)) return std::nullopt;
  while (s.size() > 1 && s.front() == '0') s.remove_prefix(1);
  if (s.size() > 10) return kMaxDelta;
  int64_t n = 0;
  for (const char c : s) n = n * 10 + (c - '0');
  return std::min(n, kMaxDelta);
}

// A directive argument: token or quoted-string (§5.2: recipients accept
// both forms). nullopt for a malformed quoted-string.
std::optional<std::string> argument(std::string_view arg) {
  if (arg.empty() || arg.front() != '"') {
    if (!is_token(arg)) return std::nullopt;
    return std::string(arg);
  }
  std::string out;
  for (size_t i = 1; i < arg.size(); ++i) {
    const char c = arg[i];
    if (c == '\\') {
      if (++i >= arg.size()) return std::nullopt;
      out.push_back(arg[i]);
    } else if (c == '"') {
      if (i + 1 != arg.size()) return std::nullopt;
      return out;
    } else {
      out.push_back(c);
    }
  }
  return std::nullopt;  // no closing quote
}

std::optional<int64_t> delta_seconds(std::string_view arg) {
  const auto a = argument(arg);
  return a ? digits_value(*a) : std::nullopt;
}

// Of two values of one directive the smaller counts: never fresher than either.
void keep_smaller(std::optional<int64_t>& slot, int64_t v) { slot = slot ? std::min(*slot, v) : v; }

// The field names of no-cache="a, b" / private="x", lower-cased; false when
// the argument is not a list of field names.
bool field_names(std::string_view arg, std::vector<std::string>& out) {
  const auto a = argument(arg);
  if (!a) return false;
  bool ok = true;
  size_t n = 0;
  http::for_each_member(*a, [&](std::string_view m) {
    ok = ok && is_token(m);
    out.push_back(text::lowered(m));
    ++n;
  });
  return ok && n > 0;
}

void apply(Directives& d, std::string_view member) {
  const size_t eq = member.find('=');
  const std::string_view name = member.substr(0, eq);
  if (!is_token(name)) return;  // `max-age =1`: not a directive we know
  const bool has_arg = eq != std::string_view::npos;
  const std::string_view arg = has_arg ? member.substr(eq + 1) : std::string_view{};
  if (iequals(name, "max-age") || iequals(name, "s-maxage")) {
    auto& slot = iequals(name, "max-age") ? d.max_age : d.s_maxage;
    const auto v = has_arg ? delta_seconds(arg) : std::nullopt;
    keep_smaller(slot, v.value_or(0));  // §4.2.1: invalid = stale
  } else if (iequals(name, "stale-while-revalidate") || iequals(name, "stale-if-error")) {
    auto& slot = iequals(name, "stale-if-error") ? d.stale_if_error : d.stale_while_revalidate;
    if (const auto v = has_arg ? delta_seconds(arg) : std::nullopt) keep_smaller(slot, *v);
  } else if (iequals(name, "max-stale")) {
    if (!has_arg) {
      keep_smaller(d.max_stale, kMaxDelta);
    } else if (const auto v = delta_seconds(arg)) {
      keep_smaller(d.max_stale, *v);
    }
  } else if (iequals(name, "min-fresh")) {
    if (const auto v = has_arg ? delta_seconds(arg) : std::nullopt) {
      d.min_fresh = std::max(d.min_fresh.value_or(0), *v);
    }
  } else if (iequals(name, "no-cache")) {
    if (!has_arg || !field_names(arg, d.no_cache_fields)) d.no_cache = true;
  } else if (iequals(name, "private")) {
    if (!has_arg || !field_names(arg, d.private_fields)) d.private_ = true;
  } else if (iequals(name, "no-store")) {
    d.no_store = true;
  } else if (iequals(name, "public")) {
    d.public_ = true;
  } else if (iequals(name, "must-revalidate")) {
    d.must_revalidate = true;
  } else if (iequals(name, "proxy-revalidate")) {
    d.proxy_revalidate = true;
  } else if (iequals(name, "must-understand")) {
    d.must_understand = true;
  } else if (iequals(name, "immutable")) {
    d.immutable = true;
  } else if (iequals(name, "only-if-cached")) {
    d.only_if_cached = true;
  }
}

// Statuses whose caching semantics this cache implements (must-understand,
// §5.2.2.3): the final statuses RFC 9110 defines.
bool understood(int status, const Policy& p) {
  static constexpr std::array<int, 33> kKnown = {
      200, 201, 202, 203, 204, 205, 206, 300, 301, 302, 303, 304, 305, 307, 308, 400, 401,
      402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417};
  if (status == 206) return p.store_partial;
  if (std::find(kKnown.begin(), kKnown.end(), status) != kKnown.end()) return true;
  return (status >= 421 && status <= 422) || status == 426 || (status >= 500 && status <= 505);
}

bool has_vary_star(Fields response) {
  const auto members = http::list_members(response, "Vary");
  return std::find(members.begin(), members.end(), "*") != members.end();
}

struct Timing {
  int64_t lifetime = 0;
  int64_t age = 0;
  bool fresh() const { return age < lifetime; }
};

Timing timing(const Stored& s, const Policy& p, int64_t now) {
  return Timing{freshness_lifetime(s, p), current_age(s, now)};
}

// Runs of OWS inside a value become one space; none around commas.
std::string folded(std::string_view value, bool sort_members) {
  std::vector<std::string> members;
  http::for_each_member(value, [&](std::string_view m) {
    std::string out;
    bool space = false;
    for (const char c : m) {
      if (text::is_ows(c)) {
        space = true;
        continue;
      }
      // No space kept next to ';' or '=': "gzip ; q=1" is "gzip;q=1".
      if (space && !out.empty() && out.back() != ';' && out.back() != '=' && c != ';' && c != '=') {
        out.push_back(' ');
      }
      space = false;
      out.push_back(sort_members ? text::to_lower(c) : c);
    }
    members.push_back(std::move(out));
  });
  if (sort_members) {
    std::sort(members.begin(), members.end());
    members.erase(std::unique(members.begin(), members.end()), members.end());
  }
  std::string out;
  for (const auto& m : members) {
    if (!out.empty()) out.push_back(',');
    out.append(m);
  }
  return out;
}

// A Location / Content-Location value as a cache key when it names the same
// origin as the request (§4.4). The scheme is not compared: the replica
// does not know which one its clients used, and invalidating one key too
// many costs one origin fetch, never a wrong answer.
std::optional<std::string> same_origin_key(std::string_view ref, std::string_view target,
                                           std::string_view authority) {
  ref = text::trim_ows(ref);
  if (const size_t hash = ref.find('#'); hash != std::string_view::npos) ref = ref.substr(0, hash);
  if (ref.empty()) return std::nullopt;
  std::string_view rest = ref;
  if (text::istarts_with(rest, "http://")) {
    rest.remove_prefix(5);
  } else if (text::istarts_with(rest, "https://")) {
    rest.remove_prefix(6);
  }
  if (rest.starts_with("//")) {
    rest.remove_prefix(2);
    const size_t end = rest.find_first_of("/?");
    if (!iequals(rest.substr(0, end), authority)) return std::nullopt;
    rest = end == std::string_view::npos ? std::string_view("/") : rest.substr(end);
    if (rest.front() == '?') return cache_key("/" + std::string(rest));
    return cache_key(rest);
  }
  if (rest.size() != ref.size()) return std::nullopt;                // "http:" without "//"
  if (ref.find(':') < ref.find_first_of("/?")) return std::nullopt;  // another scheme
  if (ref.front() == '/') return cache_key(ref);
  // A relative reference: against the target's directory (RFC 3986 §5.2).
  const std::string_view path = target.substr(0, target.find('?'));
  if (ref.front() == '?') return cache_key(std::string(path) + std::string(ref));
  const size_t slash = path.rfind('/');
  const std::string base(path.substr(0, slash == std::string_view::npos ? 0 : slash + 1));
  return cache_key(base + std::string(ref));
}

}  // namespace

// ------------------------------------------------------------ the inputs

Directives parse_cache_control(std::string_view value) {
  Directives d;
  http::for_each_member(value, [&](std::string_view m) { apply(d, m); });
  return d;
}

Directives parse_cache_control(Fields fields, std::string_view name) {
  Directives d;
  for (const auto line : http::field_lines(fields, name)) {
    http::for_each_member(line, [&](std::string_view m) { apply(d, m); });
  }
  return d;
}

std::optional<Directives> parse_targeted(Fields fields, std::string_view name) {
  if (!http::has_field(fields, name)) return std::nullopt;
  const std::string value = http::combined(fields, name);
  if (text::trim_ows(value).empty()) return std::nullopt;
  using Type = http::sf::Item::Type;
  Directives d;
  bool ok = true;
  bool any = false;
  const bool valid = http::sf::parse_dictionary(value, [&](std::string_view key, http::sf::Item v) {
    any = true;
    const bool flag = v.type == Type::Boolean;
    const auto seconds = [&](std::optional<int64_t>& slot) {
      if (v.type != Type::Integer || v.integer < 0) {
        ok = false;
        return;
      }
      slot = std::min(v.integer, kMaxDelta);  // RFC 8941: the last of a repeated key
    };
    if (key == "max-age") {
      seconds(d.max_age);
    } else if (key == "s-maxage") {
      seconds(d.s_maxage);
    } else if (key == "stale-while-revalidate") {
      seconds(d.stale_while_revalidate);
    } else if (key == "stale-if-error") {
      seconds(d.stale_if_error);
    } else if (key == "no-store" || key == "public" || key == "must-revalidate" ||
               key == "proxy-revalidate" || key == "immutable" || key == "must-understand") {
      if (!flag) {
        ok = false;
        return;
      }
      bool& slot = key == "no-store"          ? d.no_store
                   : key == "public"          ? d.public_
                   : key == "must-revalidate" ? d.must_revalidate
                   : key == "immutable"       ? d.immutable
                   : key == "must-understand" ? d.must_understand
                                              : d.proxy_revalidate;
      slot = v.boolean;
    } else if (key == "no-cache" || key == "private") {
      // Field-name lists have no agreed Structured form: any value but
      // ?0 means the whole response.
      bool& slot = key == "no-cache" ? d.no_cache : d.private_;
      slot = !flag || v.boolean;
    }
  });
  if (!valid || !ok || !any) return std::nullopt;
  return d;
}

std::optional<int64_t> parse_age(Fields fields) {
  const auto members = http::list_members(fields, "Age");
  if (members.empty()) return std::nullopt;
  return digits_value(members.front());
}

std::optional<int64_t> parse_expires(Fields fields, int64_t now) {
  const auto lines = http::field_lines(fields, "Expires");
  if (lines.empty()) return std::nullopt;
  for (const auto line : lines) {
    if (text::trim_ows(line) != text::trim_ows(lines.front())) return kExpired;
  }
  const int64_t t = http::parse_http_date(text::trim_ows(lines.front()), now);
  return t >= 0 ? t : kExpired;
}

std::optional<int64_t> parse_date(Fields fields, std::string_view name, int64_t now) {
  const auto lines = http::field_lines(fields, name);
  if (lines.empty()) return std::nullopt;
  const int64_t t = http::parse_http_date(text::trim_ows(lines.front()), now);
  if (t < 0) return std::nullopt;
  return t;
}

Governing governing(Fields response, const Policy& p) {
  if (!p.targeted_field.empty()) {
    if (auto d = parse_targeted(response, p.targeted_field)) return Governing{std::move(*d), true};
  }
  if (auto d = parse_targeted(response, "CDN-Cache-Control")) {
    return Governing{std::move(*d), true};
  }
  return Governing{parse_cache_control(response), false};
}

// ------------------------------------------------------------ storing

std::string_view to_string(Verdict v) {
  switch (v) {
    case Verdict::Storable:
      return "storable";
    case Verdict::Method:
      return "method";
    case Verdict::Status:
      return "status";
    case Verdict::NoStore:
      return "no-store";
    case Verdict::Private:
      return "private";
    case Verdict::Authorization:
      return "authorization";
    case Verdict::VaryAll:
      return "vary-star";
    case Verdict::NotCacheable:
      return "no-freshness";
  }
  return "?";
}

bool heuristically_cacheable(int status) {
  static constexpr std::array<int, 12> kList = {200, 203, 204, 206, 300, 301,
                                                308, 404, 405, 410, 414, 501};
  return std::find(kList.begin(), kList.end(), status) != kList.end();
}

Verdict storable(std::string_view method, Fields request, int status, Fields response,
                 const Policy& p) {
  if (method != "GET") return Verdict::Method;
  if (status < 200 || status > 999 || status == 304) return Verdict::Status;
  if (status == 206 && !p.store_partial) return Verdict::Status;
  if (parse_cache_control(request).no_store) return Verdict::NoStore;
  const Governing g = governing(response, p);
  const Directives& d = g.d;
  if (d.must_understand) {
    // §5.2.2.3: must-understand overrides no-store for a status we know.
    if (!understood(status, p)) return Verdict::Status;
  } else if (d.no_store) {
    return Verdict::NoStore;
  }
  if (d.private_) return Verdict::Private;
  if (http::has_field(request, "Authorization") && !d.public_ && !d.must_revalidate &&
      !d.s_maxage) {
    return Verdict::Authorization;
  }
  if (has_vary_star(response)) return Verdict::VaryAll;
  const bool explicit_freshness =
      d.max_age || d.s_maxage || (!g.targeted && http::has_field(response, "Expires"));
  if (!explicit_freshness && !d.public_ && !heuristically_cacheable(status)) {
    return Verdict::NotCacheable;
  }
  return Verdict::Storable;
}

std::vector<http::Header> storable_headers(Fields response, const Policy& p) {
  const Directives d = governing(response, p).d;
  std::vector<http::Header> out = http::end_to_end(response);
  std::erase_if(out, [&](const http::Header& h) {
    const auto named = [&](const std::vector<std::string>& names) {
      return std::any_of(names.begin(), names.end(),
                         [&](const std::string& n) { return iequals(h.name, n); });
    };
    // Vary stays whatever the lists name: without it, one client's variant
    // would be served to all.
    return !iequals(h.name, "Vary") && (named(d.no_cache_fields) || named(d.private_fields));
  });
  return out;
}

// ------------------------------------------------------------ freshness

bool heuristic(const Stored& s, const Policy& p) {
  const Governing g = governing(s.headers, p);
  if (g.d.s_maxage || g.d.max_age) return false;
  if (!g.targeted && http::has_field(s.headers, "Expires")) return false;
  return heuristically_cacheable(s.status) || g.d.public_;
}

int64_t freshness_lifetime(const Stored& s, const Policy& p) {
  const Governing g = governing(s.headers, p);
  if (g.d.s_maxage) return *g.d.s_maxage;
  if (g.d.max_age) return *g.d.max_age;
  const int64_t date = parse_date(s.headers, "Date", s.response_time).value_or(s.response_time);
  if (!g.targeted) {
    if (const auto expires = parse_expires(s.headers, s.response_time)) {
      return std::clamp<int64_t>(*expires - date, 0, kMaxDelta);
    }
  }
  if (!heuristically_cacheable(s.status) && !g.d.public_) return 0;
  if (p.default_ttl) return std::max<int64_t>(0, *p.default_ttl);
  const auto lm = parse_date(s.headers, "Last-Modified", s.response_time);
  if (!lm || *lm >= date || p.heuristic_cap <= 0 || p.heuristic_percent <= 0) return 0;
  const int64_t since = std::min<int64_t>(date - *lm, kMaxDelta * 100);
  return std::min<int64_t>(since * p.heuristic_percent / 100, p.heuristic_cap);
}

int64_t current_age(const Stored& s, int64_t now) {
  const int64_t age_value = parse_age(s.headers).value_or(0);
  const int64_t date_value =
      parse_date(s.headers, "Date", s.response_time).value_or(s.response_time);
  const int64_t apparent_age = std::max<int64_t>(0, s.response_time - date_value);
  const int64_t response_delay = std::max<int64_t>(0, s.response_time - s.request_time);
  const int64_t corrected_age_value = age_value + response_delay;
  const int64_t corrected_initial_age = std::max(apparent_age, corrected_age_value);
  const int64_t resident_time = std::max<int64_t>(0, now - s.response_time);
  return corrected_initial_age + resident_time;
}

bool may_serve_stale(const Stored& s, const Policy& p) {
  const Directives d = governing(s.headers, p).d;
  return !d.no_cache && !d.must_revalidate && !d.proxy_revalidate && !d.s_maxage;
}

std::string_view to_string(Action a) {
  switch (a) {
    case Action::Fresh:
      return "fresh";
    case Action::StaleRevalidate:
      return "stale-while-revalidate";
    case Action::Stale:
      return "stale";
    case Action::Revalidate:
      return "revalidate";
    case Action::GatewayTimeout:
      return "only-if-cached";
  }
  return "?";
}

Action decide(const Stored& s, const Policy& p, int64_t now) {
  const Directives d = governing(s.headers, p).d;
  if (d.no_cache) return Action::Revalidate;
  const Timing t = timing(s, p, now);
  if (t.fresh()) return Action::Fresh;
  if (!may_serve_stale(s, p)) return Action::Revalidate;
  const auto swr = d.stale_while_revalidate ? d.stale_while_revalidate : p.stale_while_revalidate;
  if (swr && t.age - t.lifetime < *swr) return Action::StaleRevalidate;
  return Action::Revalidate;
}

Action decide(const Stored& s, const Policy& p, int64_t now, Fields request) {
  Directives r = parse_cache_control(request);
  // RFC 9111 §5.4: Pragma: no-cache only counts without Cache-Control.
  if (!http::has_field(request, "Cache-Control")) {
    const auto pragma = http::list_members(request, "Pragma");
    r.no_cache = std::any_of(pragma.begin(), pragma.end(),
                             [](std::string_view m) { return iequals(m, "no-cache"); });
  }
  const auto finish = [&](Action a) {
    return a == Action::Revalidate && r.only_if_cached ? Action::GatewayTimeout : a;
  };
  if (r.no_cache) return finish(Action::Revalidate);
  const Action base = decide(s, p, now);
  if (base == Action::Revalidate && !may_serve_stale(s, p)) return finish(base);
  const Timing t = timing(s, p, now);
  if (t.fresh()) {
    if (r.max_age && t.age > *r.max_age) return finish(Action::Revalidate);
    if (r.min_fresh && t.lifetime - t.age < *r.min_fresh) return finish(Action::Revalidate);
    return base;
  }
  if (base != Action::Revalidate && base != Action::StaleRevalidate) return finish(base);
  // Stale, and the response lets a stale copy be served.
  if (r.max_age && t.age > *r.max_age) return finish(Action::Revalidate);
  if (r.max_stale && t.age - t.lifetime <= *r.max_stale) return Action::Stale;
  return finish(base);
}

bool usable_on_error(const Stored& s, const Policy& p, int64_t now) {
  const Directives d = governing(s.headers, p).d;
  const Timing t = timing(s, p, now);
  if (t.fresh() && !d.no_cache) return true;
  if (!may_serve_stale(s, p)) return false;
  const auto sie = d.stale_if_error ? d.stale_if_error : p.stale_if_error;
  return sie && t.age - t.lifetime < *sie;
}

bool usable_when_disconnected(const Stored& s, const Policy& p, int64_t now) {
  if (usable_on_error(s, p, now)) return true;
  const Timing t = timing(s, p, now);
  return may_serve_stale(s, p) && t.age - t.lifetime < p.stale_if_disconnected;
}

// ------------------------------------------------------------ variants

std::optional<std::string> variant_key(Fields response, Fields request) {
  std::vector<std::string> names;
  for (const auto m : http::list_members(response, "Vary")) {
    if (m == "*") return std::nullopt;
    names.push_back(text::lowered(m));
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  std::string key;
  for (const auto& name : names) {
    key.append(name);
    if (http::has_field(request, name)) {
      key.append(": ");
      // Members whose order and case carry no meaning: coding names
      // (RFC 9110 §8.4.1) and language ranges (§12.5.4, BCP 47), each with
      // its own q-value.
      const bool unordered = name == "accept-encoding" || name == "accept-language";
      key.append(folded(http::combined(request, name), unordered));
    }
    key.push_back('\n');
  }
  return key;
}

bool variant_matches(const Stored& s, Fields request) {
  const auto key = variant_key(s.headers, request);
  return key && *key == s.variant;
}

// ------------------------------------------------------------ 304, invalidation

std::vector<http::Header> updated_headers(Fields stored, Fields not_modified) {
  const std::vector<http::Header> incoming = http::end_to_end(not_modified);
  const auto replaced = [&](std::string_view name) {
    return !iequals(name, "Content-Length") &&
           std::any_of(incoming.begin(), incoming.end(),
                       [&](const http::Header& h) { return iequals(h.name, name); });
  };
  std::vector<http::Header> out;
  out.reserve(stored.size() + incoming.size());
  for (const auto& h : stored) {
    if (!replaced(h.name)) out.push_back(h);
  }
  for (const auto& h : incoming) {
    if (!iequals(h.name, "Content-Length")) out.push_back(h);
  }
  return out;
}

Stored refreshed(const Stored& old, Fields not_modified, int64_t request_time,
                 int64_t response_time) {
  Stored s;
  s.status = old.status;
  s.headers = updated_headers(old.headers, not_modified);
  s.request_time = request_time;
  s.response_time = response_time;
  s.variant = old.variant;
  return s;
}

bool not_modified_applies(Fields stored, Fields not_modified) {
  for (const std::string_view name : {"ETag", "Last-Modified"}) {
    const auto theirs = http::field_lines(not_modified, name);
    if (theirs.empty()) continue;
    const auto ours = http::field_lines(stored, name);
    return !ours.empty() && text::trim_ows(ours.front()) == text::trim_ows(theirs.front());
  }
  return true;
}

std::vector<http::Header> served_headers(const Stored& s, int64_t now) {
  std::vector<http::Header> out;
  out.reserve(s.headers.size() + 1);
  for (const auto& h : s.headers) {
    if (!iequals(h.name, "Age")) out.push_back(h);
  }
  out.push_back({"Age", std::to_string(current_age(s, now))});
  return out;
}

bool is_safe(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "TRACE";
}

std::optional<std::string> cache_key(std::string_view target) {
  const auto path = http::normalize_path(target);
  if (!path) return std::nullopt;
  std::string key = http::encode_path(*path);
  const std::string_view query = http::query_of(target);
  if (!query.empty()) key.append("?").append(query);
  return key;
}

std::vector<std::string> invalidation_targets(std::string_view method, int status,
                                              std::string_view target, std::string_view authority,
                                              Fields response) {
  std::vector<std::string> out;
  if (is_safe(method) || status < 200 || status > 399) return out;
  const auto add = [&](std::optional<std::string> key) {
    if (key && std::find(out.begin(), out.end(), *key) == out.end()) out.push_back(*key);
  };
  add(cache_key(target));
  for (const std::string_view name : {"Location", "Content-Location"}) {
    const auto lines = http::field_lines(response, name);
    if (!lines.empty()) add(same_origin_key(lines.front(), target, authority));
  }
  return out;
}

}  // namespace cdn::replica::cache
