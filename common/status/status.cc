// SPDX-License-Identifier: MIT
#include "common/status/status.hpp"

#include <charconv>
#include <cmath>
#include <iterator>
#include <nlohmann/json.hpp>

namespace cdn::status {
namespace {

using nlohmann::json;

double finite_or_zero(double v) { return std::isfinite(v) && v >= 0 ? v : 0.0; }

// Each reader returns false when the key is present with an unacceptable
// value; an absent key leaves the default in place.
bool read_string(const json& doc, const char* key, std::string& out) {
  auto it = doc.find(key);
  if (it == doc.end()) return true;
  if (!it->is_string()) return false;
  out = it->get_ref<const std::string&>();
  return true;
}

// Counters must be non-negative integers: nlohmann keeps "12" as unsigned,
// "-1" as signed and "1.0"/"1e3" as floating point, all but the first rejected.
bool read_count(const json& doc, const char* key, uint64_t& out) {
  auto it = doc.find(key);
  if (it == doc.end()) return true;
  if (!it->is_number_unsigned()) return false;
  out = it->get<uint64_t>();
  return true;
}

bool read_figure(const json& doc, const char* key, double& out) {
  auto it = doc.find(key);
  if (it == doc.end()) return true;
  if (!it->is_number()) return false;
  double v = it->get<double>();
  if (!std::isfinite(v) || v < 0) return false;
  out = v;
  return true;
}

}  // namespace

std::string_view to_string(State s) noexcept {
  switch (s) {
    case State::Starting:
      return "starting";
    case State::Serving:
      return "serving";
    case State::Draining:
      return "draining";
  }
  return "starting";
}

std::optional<State> state_from_string(std::string_view s) noexcept {
  if (s == "starting") return State::Starting;
  if (s == "serving") return State::Serving;
  if (s == "draining") return State::Draining;
  return std::nullopt;
}

std::string encode(const ReplicaStatus& s) {
  json doc = {
      {"name", s.name},
      {"source", s.source},
      {"state", std::string(to_string(s.state))},
      {"active_connections", s.active_connections},
      {"capacity", s.capacity},
      {"requests_total", s.requests_total},
      {"bytes_total", s.bytes_total},
      {"bytes_per_second", finite_or_zero(s.bytes_per_second)},
      {"load", finite_or_zero(s.load)},
      {"uptime_seconds", finite_or_zero(s.uptime_seconds)},
      {"version", s.version},
      {"cache_hits", s.cache_hits},
      {"cache_misses", s.cache_misses},
      {"cache_hit_ratio", finite_or_zero(s.cache_hit_ratio)},
      {"cache_bytes", s.cache_bytes},
      {"cache_objects", s.cache_objects},
      {"origin_requests_total", s.origin_requests_total},
      {"origin_errors_total", s.origin_errors_total},
      {"sites", s.sites},
      {"hosts", s.hosts},
      {"host_sites", s.host_sites},
  };
  // replace: a name or path that is not UTF-8 must not make dump() throw.
  return doc.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<ReplicaStatus> decode(std::string_view text) {
  if (text.size() > kMaxDocumentBytes) return std::nullopt;
  if (auto s = detail::decode_fast(text)) return s;
  return detail::decode_full(text);
}

namespace detail {

namespace {

// The fields decode_fast() knows, by kind.
enum class Kind { Text, Count, Figure, StateName };
struct Field {
  std::string_view key;
  Kind kind;
  std::string ReplicaStatus::*text = nullptr;
  uint64_t ReplicaStatus::*count = nullptr;
  double ReplicaStatus::*figure = nullptr;
};
constexpr Field text(std::string_view k, std::string ReplicaStatus::*m) {
  return {k, Kind::Text, m, nullptr, nullptr};
}
constexpr Field count(std::string_view k, uint64_t ReplicaStatus::*m) {
  return {k, Kind::Count, nullptr, m, nullptr};
}
constexpr Field figure(std::string_view k, double ReplicaStatus::*m) {
  return {k, Kind::Figure, nullptr, nullptr, m};
}
constexpr Field kFields[] = {
    text("name", &ReplicaStatus::name),
    text("source", &ReplicaStatus::source),
    {"state", Kind::StateName},
    count("active_connections", &ReplicaStatus::active_connections),
    count("capacity", &ReplicaStatus::capacity),
    count("requests_total", &ReplicaStatus::requests_total),
    count("bytes_total", &ReplicaStatus::bytes_total),
    figure("bytes_per_second", &ReplicaStatus::bytes_per_second),
    figure("load", &ReplicaStatus::load),
    figure("uptime_seconds", &ReplicaStatus::uptime_seconds),
    text("version", &ReplicaStatus::version),
    count("cache_hits", &ReplicaStatus::cache_hits),
    count("cache_misses", &ReplicaStatus::cache_misses),
    figure("cache_hit_ratio", &ReplicaStatus::cache_hit_ratio),
    count("cache_bytes", &ReplicaStatus::cache_bytes),
    count("cache_objects", &ReplicaStatus::cache_objects),
    count("origin_requests_total", &ReplicaStatus::origin_requests_total),
    count("origin_errors_total", &ReplicaStatus::origin_errors_total),
    text("sites", &ReplicaStatus::sites),
    text("hosts", &ReplicaStatus::hosts),
    text("host_sites", &ReplicaStatus::host_sites),
};
constexpr size_t kName = 0, kState = 2, kLoad = 8;
static_assert(std::size(kFields) < 32);

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

struct Reader {
  const char* p;
  const char* end;
  void skip_space() {
    while (p != end && is_space(*p)) ++p;
  }
  bool eat(char c) {
    skip_space();
    if (p == end || *p != c) return false;
    ++p;
    return true;
  }
  // A string of printable ASCII without escapes (anything else: not sure,
  // as nlohmann checks escapes and UTF-8 in ways not worth repeating here).
  bool string(std::string_view& out) {
    if (!eat('"')) return false;
    const char* start = p;
    while (p != end && *p != '"') {
      const auto c = static_cast<unsigned char>(*p);
      if (c < 0x20 || c >= 0x80 || c == '\\') return false;
      ++p;
    }
    if (p == end) return false;
    out = std::string_view(start, static_cast<size_t>(p - start));
    ++p;
    return true;
  }
  // A JSON number token without a sign (RFC 8259 grammar); `integer` tells
  // whether it has neither fraction nor exponent.
  bool number(std::string_view& out, bool& integer) {
    skip_space();
    const char* start = p;
    if (p == end || !is_digit(*p)) return false;
    if (*p == '0') {
      ++p;
    } else {
      while (p != end && is_digit(*p)) ++p;
    }
    integer = true;
    if (p != end && *p == '.') {
      ++p;
      if (p == end || !is_digit(*p)) return false;
      while (p != end && is_digit(*p)) ++p;
      integer = false;
    }
    if (p != end && (*p == 'e' || *p == 'E')) {
      ++p;
      if (p != end && (*p == '+' || *p == '-')) ++p;
      if (p == end || !is_digit(*p)) return false;
      while (p != end && is_digit(*p)) ++p;
      integer = false;
    }
    out = std::string_view(start, static_cast<size_t>(p - start));
    return true;
  }
};

}  // namespace

std::optional<ReplicaStatus> decode_fast(std::string_view text) noexcept {
  Reader r{text.data(), text.data() + text.size()};
  if (!r.eat('{')) return std::nullopt;
  ReplicaStatus s;
  uint32_t seen = 0;
  bool first = true;
  while (true) {
    if (r.eat('}')) break;  // after "," the key below fails first: no trailing comma
    if (!first && !r.eat(',')) return std::nullopt;
    first = false;
    std::string_view key;
    if (!r.string(key) || !r.eat(':')) return std::nullopt;
    size_t i = 0;
    while (i < std::size(kFields) && kFields[i].key != key) ++i;
    if (i < std::size(kFields)) {
      // A key twice: nlohmann keeps the last; not worth following here.
      if ((seen & (1u << i)) != 0) return std::nullopt;
      seen |= 1u << i;
    }
    const Kind kind = i < std::size(kFields) ? kFields[i].kind : Kind::Text;
    r.skip_space();
    if (r.p == r.end) return std::nullopt;
    if (*r.p == '"') {
      std::string_view value;
      if (!r.string(value)) return std::nullopt;
      if (i == std::size(kFields)) continue;  // unknown key: ignored
      if (kind == Kind::StateName) {
        auto st = state_from_string(value);
        if (!st) return std::nullopt;
        s.state = *st;
      } else if (kind == Kind::Text) {
        try {
          (s.*kFields[i].text).assign(value);
        } catch (...) {
          return std::nullopt;
        }
      } else {
        return std::nullopt;
      }
      continue;
    }
    std::string_view num;
    bool integer = false;
    if (!r.number(num, integer)) return std::nullopt;  // also true/false/null, [ and {
    // nlohmann refuses a whole document with a number beyond double's range,
    // even under a key we ignore: leave every such document to decode_full().
    if (!integer || num.size() > 19) {
      double v = 0;
      const auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
      if (ec != std::errc{} || !std::isfinite(v)) return std::nullopt;
    }
    if (i == std::size(kFields)) continue;
    if (kind == Kind::Count) {
      // Past 64 bits nlohmann reads a float, which decode_full() rejects.
      if (!integer) return std::nullopt;
      uint64_t v = 0;
      for (char c : num) {
        if (__builtin_mul_overflow(v, 10, &v) ||
            __builtin_add_overflow(v, static_cast<uint64_t>(c - '0'), &v)) {
          return std::nullopt;
        }
      }
      s.*kFields[i].count = v;
    } else if (kind == Kind::Figure) {
      double v = 0;
      const auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
      if (ec != std::errc{} || ptr != num.data() + num.size() || !std::isfinite(v)) {
        return std::nullopt;
      }
      s.*kFields[i].figure = v;
    } else {
      return std::nullopt;
    }
  }
  r.skip_space();
  if (r.p != r.end) return std::nullopt;
  const uint32_t required = (1u << kName) | (1u << kState) | (1u << kLoad);
  if ((seen & required) != required) return std::nullopt;
  return s;
}

std::optional<ReplicaStatus> decode_full(std::string_view text) {
  if (text.size() > kMaxDocumentBytes) return std::nullopt;
  try {
    // allow_exceptions = false: a parse error yields a discarded value.
    json doc = json::parse(text.begin(), text.end(), nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) return std::nullopt;

    ReplicaStatus s;
    // Required: name, state, load.
    auto name = doc.find("name");
    if (name == doc.end() || !name->is_string()) return std::nullopt;
    s.name = name->get_ref<const std::string&>();

    auto state = doc.find("state");
    if (state == doc.end() || !state->is_string()) return std::nullopt;
    auto st = state_from_string(state->get_ref<const std::string&>());
    if (!st) return std::nullopt;
    s.state = *st;

    if (!doc.contains("load")) return std::nullopt;
    if (!read_figure(doc, "load", s.load)) return std::nullopt;

    // Optional, with defaults.
    if (!read_string(doc, "source", s.source) || !read_string(doc, "version", s.version) ||
        !read_count(doc, "active_connections", s.active_connections) ||
        !read_count(doc, "capacity", s.capacity) ||
        !read_count(doc, "requests_total", s.requests_total) ||
        !read_count(doc, "bytes_total", s.bytes_total) ||
        !read_figure(doc, "bytes_per_second", s.bytes_per_second) ||
        !read_figure(doc, "uptime_seconds", s.uptime_seconds) ||
        !read_count(doc, "cache_hits", s.cache_hits) ||
        !read_count(doc, "cache_misses", s.cache_misses) ||
        !read_figure(doc, "cache_hit_ratio", s.cache_hit_ratio) ||
        !read_count(doc, "cache_bytes", s.cache_bytes) ||
        !read_count(doc, "cache_objects", s.cache_objects) ||
        !read_count(doc, "origin_requests_total", s.origin_requests_total) ||
        !read_count(doc, "origin_errors_total", s.origin_errors_total) ||
        !read_string(doc, "sites", s.sites) || !read_string(doc, "hosts", s.hosts) ||
        !read_string(doc, "host_sites", s.host_sites)) {
      return std::nullopt;
    }
    return s;
  } catch (...) {
    // Only std::bad_alloc can get here; the contract is "never throws".
    return std::nullopt;
  }
}

}  // namespace detail

}  // namespace cdn::status
