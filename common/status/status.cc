#include "common/status/status.hpp"

#include <cmath>
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
  };
  // replace: a name or path that is not UTF-8 must not make dump() throw.
  return doc.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<ReplicaStatus> decode(std::string_view text) {
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
        !read_count(doc, "origin_errors_total", s.origin_errors_total)) {
      return std::nullopt;
    }
    return s;
  } catch (...) {
    // Only std::bad_alloc can get here; the contract is "never throws".
    return std::nullopt;
  }
}

}  // namespace cdn::status
