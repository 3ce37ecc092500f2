// SPDX-License-Identifier: MIT
#include "common/config/settings.hpp"

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <utility>

#include "common/admin/allow.hpp"
#include "common/config/site_map.hpp"
#include "common/text/text.hpp"

namespace cdn::config {

namespace {

constexpr std::string_view kSpace = " \t\r\n\f\v";
// [server] max_connections, and [content] capacity (the connections at load 1.0).
constexpr uint64_t kMaxConnections = 10'000'000;
constexpr double kMaxHashLoadFactor = 100.0;
// [server] name goes into the CDN-Replica header and the status document.
constexpr size_t kMaxNameLength = 255;
constexpr std::string_view kNameRule = "printable ASCII, at most 255 characters";
constexpr std::string_view kAccessFormats[] = {"combined", "json"};
constexpr std::string_view kKtlsModes[] = {"auto", "off"};
constexpr std::string_view kLevels[] = {"trace", "debug",    "info", "warn",
                                        "error", "critical", "off"};
// In BalancePolicy's order.
constexpr std::string_view kPolicies[] = {"best", "round-robin", "least-loaded", "p2c",
                                          "consistent"};

using text::lowered;
using text::trim;

template <size_t N>
bool one_of(std::string_view v, const std::string_view (&set)[N]) {
  for (const auto s : set) {
    if (s == v) return true;
  }
  return false;
}

template <size_t N>
std::string list(const std::string_view (&set)[N]) {
  std::string out;
  for (const auto s : set) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out;
}

std::string q(std::string_view v) { return "'" + std::string(v) + "'"; }

// In the largest unit that shows it exactly: 100ms, 90s, 5m, 8760h.
std::string show(milliseconds d) {
  const auto ms = d.count();
  if (ms == 0) return "0";
  if (ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string show(const DurationRange& r) { return show(r.min) + " to " + show(r.max); }

// In the largest unit parse_size knows that shows it exactly: 256, 64K, 1M, 1024T.
std::string show_size(uint64_t n) {
  constexpr std::string_view kUnits[] = {"", "K", "M", "G", "T"};
  size_t u = 0;
  while (n != 0 && n % 1024 == 0 && u + 1 < std::size(kUnits)) {
    n /= 1024;
    ++u;
  }
  return std::to_string(n) + std::string(kUnits[u]);
}

bool is_printable_name(std::string_view s) {
  return s.size() <= kMaxNameLength && std::all_of(s.begin(), s.end(), [](char c) {
           return static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f;
         });
}

bool is_ip_literal(std::string_view s) {
  if (s.empty() || s.size() >= INET6_ADDRSTRLEN) return false;
  const std::string copy(s);
  in_addr a4{};
  in6_addr a6{};
  return inet_pton(AF_INET, copy.c_str(), &a4) == 1 || inet_pton(AF_INET6, copy.c_str(), &a6) == 1;
}

// ---- typed values from entries; every failure names file:line:[section] key ----

[[noreturn]] void bad(const IniFile& f, const Entry& e, std::string_view what) {
  throw Error(where(f, e, what));
}

milliseconds duration_of(const IniFile& f, const Entry& e, const DurationRange& range) {
  const auto d = parse_duration(e.value);
  if (!d) {
    bad(f, e, q(e.value) + " is not a duration (use 500ms, 2s, 1m; allowed: " + show(range) + ")");
  }
  if (*d < range.min || *d > range.max) {
    bad(f, e, q(e.value) + " is out of range (allowed: " + show(range) + ")");
  }
  return *d;
}

uint64_t uint_of(const IniFile& f, const Entry& e, uint64_t min, uint64_t max) {
  const auto v = parse_uint(e.value);
  if (!v || *v < min || *v > max) {
    bad(f, e,
        q(e.value) + " is not a whole number from " + std::to_string(min) + " to " +
            std::to_string(max));
  }
  return *v;
}

uint64_t size_of(const IniFile& f, const Entry& e, uint64_t min, uint64_t max) {
  const auto v = parse_size(e.value);
  if (!v) bad(f, e, q(e.value) + " is not a size (use 512, 64K, 1M)");
  if (*v < min || *v > max) {
    bad(f, e,
        q(e.value) + " is out of range (allowed: " + show_size(min) + " to " + show_size(max) +
            " bytes)");
  }
  return *v;
}

std::string choice_of(const IniFile& f, const Entry& e, std::string_view what,
                      const auto& choices) {
  std::string v = lowered(trim(e.value));
  if (!one_of(v, choices)) {
    bad(f, e,
        q(e.value) + " is not a " + std::string(what) + " (use one of " + list(choices) + ")");
  }
  return v;
}

// ---- sections and keys ----

using Setter = std::function<void(const Entry&)>;

struct KeySpec {
  std::string_view name;
  Setter set;
  bool repeatable = false;
};

struct SectionSpec {
  std::string_view name;
  std::vector<KeySpec> keys;
};

std::string section_names(const std::vector<SectionSpec>& spec) {
  std::string out;
  for (const auto& s : spec) {
    if (!out.empty()) out += ", ";
    out += "[" + std::string(s.name) + "]";
  }
  return out;
}

// Checks every heading and key against spec and hands each value to its setter.
// A key that is not repeatable may appear once.
void apply(const IniFile& f, const std::vector<SectionSpec>& spec) {
  const auto find_section = [&](std::string_view name) -> const SectionSpec* {
    for (const auto& s : spec) {
      if (s.name == name) return &s;
    }
    return nullptr;
  };
  for (const auto& s : f.sections) {
    if (find_section(s.name) == nullptr) {
      throw Error(f.path + ":" + std::to_string(s.line) + ": [" + s.name +
                  "]: unknown section (known: " + section_names(spec) + ")");
    }
  }
  std::map<std::pair<std::string, std::string>, int> seen;
  for (const auto& e : f.entries) {
    if (e.section.empty()) {
      throw Error(f.path + ":" + std::to_string(e.line) + ": " + e.key +
                  ": key outside any section (put it under one of " + section_names(spec) + ")");
    }
    const SectionSpec* section = find_section(e.section);
    if (section == nullptr) bad(f, e, "unknown section");  // unreachable: headings checked above
    const KeySpec* key = nullptr;
    for (const auto& k : section->keys) {
      if (k.name == e.key) key = &k;
    }
    if (key == nullptr) {
      std::string known;
      for (const auto& k : section->keys) {
        if (!known.empty()) known += ", ";
        known += k.name;
      }
      bad(f, e, "unknown key (known in [" + e.section + "]: " + known + ")");
    }
    if (!key->repeatable) {
      const auto [it, fresh] = seen.emplace(std::make_pair(e.section, e.key), e.line);
      if (!fresh) bad(f, e, "set twice (first at line " + std::to_string(it->second) + ")");
    }
    key->set(e);
  }
}

// A relative path in file f means relative to f's directory: every path
// key (root, page, cache_dir, ca_file, servers_file, [log] file) alike, so a
// configuration works the same whatever the working directory.
std::string resolve(const IniFile& f, std::string_view value) {
  const std::filesystem::path p{std::string(value)};
  if (p.empty() || p.is_absolute()) return p.string();
  const std::filesystem::path dir = std::filesystem::path(f.path).parent_path();
  return (dir / p).lexically_normal().string();
}

std::string ip_of(const IniFile& f, const Entry& e) {
  std::string_view v = trim(e.value);
  if (v.size() >= 2 && v.front() == '[' && v.back() == ']') v = v.substr(1, v.size() - 2);
  if (!is_ip_literal(v))
    bad(f, e, q(e.value) + " is not an IP address (use 0.0.0.0, ::, 127.0.0.1)");
  return std::string(v);
}

SectionSpec server_section(const IniFile& f, ServerSettings& s) {
  return {"server",
          {
              {"address", [&](const Entry& e) { s.address = ip_of(f, e); }},
              // 0 asks the kernel for any free port (tests use it).
              {"port",
               [&](const Entry& e) { s.port = static_cast<uint16_t>(uint_of(f, e, 0, 65535)); }},
              {"name",
               [&](const Entry& e) {
                 const std::string_view v = trim(e.value);
                 if (!is_printable_name(v)) {
                   bad(f, e, q(e.value) + " is not a name (" + std::string(kNameRule) + ")");
                 }
                 s.name = std::string(v);
               }},
              {"max_connections",
               [&](const Entry& e) {
                 s.max_connections = static_cast<uint32_t>(uint_of(f, e, 1, kMaxConnections));
               }},
              {"idle_timeout",
               [&](const Entry& e) { s.idle_timeout = duration_of(f, e, kTimeoutRange); }},
              {"header_timeout",
               [&](const Entry& e) { s.header_timeout = duration_of(f, e, kTimeoutRange); }},
              {"send_timeout",
               [&](const Entry& e) { s.send_timeout = duration_of(f, e, kTimeoutRange); }},
              {"drain_timeout",
               [&](const Entry& e) { s.drain_timeout = duration_of(f, e, kTimeoutRange); }},
              {"max_request_line",
               [&](const Entry& e) { s.max_request_line = size_of(f, e, 64, 1 << 20); }},
              {"max_header_bytes",
               [&](const Entry& e) { s.max_header_bytes = size_of(f, e, 256, 64 << 20); }},
              {"max_headers",
               [&](const Entry& e) {
                 s.max_headers = static_cast<uint32_t>(uint_of(f, e, 1, 10'000));
               }},
              {"max_body", [&](const Entry& e) { s.max_body = size_of(f, e, 0, 1ULL << 30); }},
              {"workers",
               [&](const Entry& e) {
                 s.workers = trim(e.value) == "auto"
                                 ? 0
                                 : static_cast<uint32_t>(uint_of(f, e, 1, kMaxWorkers));
               }},
          }};
}

std::string resolve(const IniFile& f, std::string_view value);

std::string file_of(const IniFile& f, const Entry& e) {
  const std::string_view v = trim(e.value);
  if (v.empty()) bad(f, e, "must name a file");
  return resolve(f, v);
}

SectionSpec tls_section(const IniFile& f, TlsSettings& s) {
  return {
      "tls",
      {
          {"port",
           [&](const Entry& e) { s.port = static_cast<uint16_t>(uint_of(f, e, 0, 65535)); }},
          {"address",
           [&](const Entry& e) {
             s.address = trim(e.value).empty() ? std::string() : ip_of(f, e);
           }},
          {"certificate", [&](const Entry& e) { s.certificates.push_back(file_of(f, e)); }, true},
          {"key", [&](const Entry& e) { s.keys.push_back(file_of(f, e)); }, true},
          {"ocsp", [&](const Entry& e) { s.ocsp.push_back(file_of(f, e)); }, true},
          {"handshake_timeout",
           [&](const Entry& e) { s.handshake_timeout = duration_of(f, e, kTimeoutRange); }},
          {"ktls", [&](const Entry& e) { s.ktls = choice_of(f, e, "kTLS mode", kKtlsModes); }},
      }};
}

SectionSpec log_section(const IniFile& f, LogSettings& s) {
  return {"log",
          {
              {"level", [&](const Entry& e) { s.level = choice_of(f, e, "log level", kLevels); }},
              {"file", [&](const Entry& e) { s.file = resolve(f, trim(e.value)); }},
              {"access",
               [&](const Entry& e) {
                 const std::string_view v = trim(e.value);
                 if (v.empty()) bad(f, e, "empty (use off, journal or a file path)");
                 s.access = v == "off" || v == "journal" ? std::string(v) : resolve(f, v);
               }},
              {"access_format",
               [&](const Entry& e) {
                 s.access_format = choice_of(f, e, "access log format", kAccessFormats);
               }},
          }};
}

SectionSpec admin_section(const IniFile& f, AdminSettings& s) {
  return {"admin",
          {
              {"allow",
               [&](const Entry& e) {
                 try {
                   (void)admin::AllowList::parse(e.value);
                 } catch (const std::invalid_argument& err) {
                   bad(f, e, err.what());
                 }
                 s.allow = std::string(trim(e.value));
               }},
              {"token_file",
               [&](const Entry& e) {
                 const std::string_view v = trim(e.value);
                 s.token_file = v.empty() ? std::string() : resolve(f, v);
               }},
          }};
}

// A replica and where it was written, for duplicate messages.
struct Listed {
  ReplicaEntry entry;
  std::string source;  // "FILE:LINE"
};

std::string canonical(const HostPort& hp) { return lowered(hp.str()); }

std::vector<Listed> servers_with_lines(std::string_view text, const std::string& path,
                                       uint16_t default_port) {
  std::vector<Listed> out;
  int line = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    ++line;
    const size_t nl = text.find('\n', pos);
    std::string_view raw = text.substr(pos, nl == std::string_view::npos ? text.npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    if (const size_t hash = raw.find('#'); hash != std::string_view::npos) {
      raw = raw.substr(0, hash);
    }
    const std::string_view v = trim(raw);
    if (v.empty()) continue;
    const std::string here = path + ":" + std::to_string(line);
    ReplicaEntry r;
    try {
      r = parse_replica_entry(v, default_port);
    } catch (const Error& err) {
      throw Error(here + ": " + err.what());
    }
    if (r.address.port == 0) {
      throw Error(here + ": " + q(v) + " has no port, and there is no default port to use");
    }
    out.push_back(Listed{std::move(r), here});
  }
  return out;
}

void check_content_source(const ContentSettings& c, const std::string& section,
                          const std::string& prefix) {
  std::vector<std::string_view> given;
  if (!c.root.empty()) given.push_back("root");
  if (!c.page.empty()) given.push_back("page");
  if (!c.origin.empty()) given.push_back("origin");
  if (given.size() == 1) return;
  std::string why;
  if (given.empty()) {
    why = "none is set";
  } else if (given.size() == 2) {
    why = "both " + std::string(given[0]) + " and " + std::string(given[1]) + " are set";
  } else {
    why = "root, page and origin are all set";
  }
  throw Error(prefix + section + ": set exactly one of root, page or origin (" + why + ")");
}

void check_duration(milliseconds d, const DurationRange& range, std::string_view name,
                    const std::string& prefix) {
  if (d < range.min || d > range.max) {
    throw Error(prefix + std::string(name) + ": " + show(d) +
                " is out of range (allowed: " + show(range) + ")");
  }
}

void check_server(const ServerSettings& s, const std::string& prefix) {
  std::string_view addr = s.address;
  if (!is_ip_literal(addr)) {
    throw Error(prefix + "[server] address: " + q(addr) + " is not an IP address");
  }
  if (!is_printable_name(s.name)) {
    throw Error(prefix + "[server] name: " + q(s.name) + " is not a name (" +
                std::string(kNameRule) + ")");
  }
  if (s.max_connections < 1) throw Error(prefix + "[server] max_connections: must be at least 1");
  check_duration(s.idle_timeout, kTimeoutRange, "[server] idle_timeout", prefix);
  check_duration(s.header_timeout, kTimeoutRange, "[server] header_timeout", prefix);
  check_duration(s.send_timeout, kTimeoutRange, "[server] send_timeout", prefix);
  check_duration(s.drain_timeout, kTimeoutRange, "[server] drain_timeout", prefix);
  if (s.max_request_line < 1) throw Error(prefix + "[server] max_request_line: must be at least 1");
  if (s.max_header_bytes < 1) throw Error(prefix + "[server] max_header_bytes: must be at least 1");
  if (s.max_headers < 1) throw Error(prefix + "[server] max_headers: must be at least 1");
}

void check_tls(const TlsSettings& t, const ServerSettings& server, const std::string& prefix) {
  if (!t.address.empty() && !is_ip_literal(t.address)) {
    throw Error(prefix + "[tls] address: " + q(t.address) + " is not an IP address");
  }
  check_duration(t.handshake_timeout, kTimeoutRange, "[tls] handshake_timeout", prefix);
  if (t.certificates.size() != t.keys.size()) {
    throw Error(prefix + "[tls]: " + std::to_string(t.certificates.size()) +
                " certificate(s) but " + std::to_string(t.keys.size()) +
                " key(s) (give one key after each certificate, in the same order)");
  }
  if (!t.enabled()) return;
  if (t.certificates.empty()) {
    throw Error(prefix + "[tls] port: " + std::to_string(t.port) +
                " needs a certificate and its key ([tls] certificate, key)");
  }
  const std::string_view address = t.address.empty() ? server.address : t.address;
  if (t.port == server.port && address == server.address) {
    throw Error(prefix + "[tls] port: " + std::to_string(t.port) +
                " is [server] port too (HTTPS needs a port of its own)");
  }
}

void check_log(const LogSettings& s, const std::string& prefix) {
  if (!one_of(s.level, kLevels)) {
    throw Error(prefix + "[log] level: " + q(s.level) + " is not a log level (use one of " +
                list(kLevels) + ")");
  }
  if (!one_of(s.access_format, kAccessFormats)) {
    throw Error(prefix + "[log] access_format: " + q(s.access_format) + " is not one of " +
                list(kAccessFormats));
  }
  if (s.access.empty()) throw Error(prefix + "[log] access: empty (use off, journal or a path)");
}

void check_admin(const AdminSettings& s, const std::string& prefix) {
  try {
    (void)admin::AllowList::parse(s.allow);
  } catch (const std::invalid_argument& err) {
    throw Error(prefix + "[admin] allow: " + err.what());
  }
}

std::optional<double> parse_double(std::string_view s) {
  s = trim(s);
  if (s.empty()) return std::nullopt;
  double v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || ptr != s.data() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

}  // namespace

std::optional<BalancePolicy> policy_from_string(std::string_view s) noexcept {
  for (size_t i = 0; i < std::size(kPolicies); ++i) {
    if (text::iequals(s, kPolicies[i])) return static_cast<BalancePolicy>(i);
  }
  return std::nullopt;
}

std::string_view to_string(BalancePolicy p) noexcept {
  const auto i = static_cast<size_t>(p);
  return i < std::size(kPolicies) ? kPolicies[i] : "?";
}

BalancePolicy parse_policy(std::string_view s, std::string_view where) {
  const auto p = policy_from_string(s);
  if (!p) {
    throw Error(std::string(where) + ": " + q(s) + " is not a policy (use one of " +
                list(kPolicies) + ")");
  }
  return *p;
}

std::string normalize_origin(std::string_view origin) {
  const std::string_view s = trim(origin);
  const auto fail = [&](std::string_view why) -> Error {
    return Error(q(origin) + " is not an origin: " + std::string(why) +
                 " (use http://host[:port][/path], https://... or a bare host[:port][/path])");
  };
  if (s.empty()) throw fail("it is empty");
  std::string scheme = "http";
  std::string_view rest = s;
  if (const size_t p = s.find("://"); p != std::string_view::npos) {
    scheme = lowered(s.substr(0, p));
    if (scheme != "http" && scheme != "https") throw fail("only http:// and https:// are served");
    rest = s.substr(p + 3);
  }
  // RFC 3986: the authority ends at the first '/', '?' or '#'.
  const size_t end = rest.find_first_of("/?#");
  const std::string_view authority = rest.substr(0, end);
  const std::string_view tail = end == std::string_view::npos ? "" : rest.substr(end);
  if (authority.empty()) throw fail("it has no host");
  if (authority.find('@') != std::string_view::npos) {
    throw fail("user@ credentials are not supported");
  }
  if (!parse_host_port(authority, 1)) throw fail(q(authority) + " is not a host[:port]");
  // Every request path is appended to the origin's path, so a query or a
  // fragment would swallow them all: every path would fetch the same URL.
  if (const size_t k = tail.find_first_of("?#"); k != std::string_view::npos) {
    throw fail(tail[k] == '?'
                   ? "it has a query ('?...'), to which request paths cannot be added"
                   : "it has a fragment ('#...'), to which request paths cannot be added");
  }
  for (size_t i = 0; i < tail.size(); ++i) {
    const auto c = static_cast<unsigned char>(tail[i]);
    if (c <= 0x20 || c >= 0x7f || c == '\\' || c == '"' || c == '<' || c == '>' || c == '^' ||
        c == '`' || c == '{' || c == '|' || c == '}') {
      throw fail("its path holds a character a URL cannot (percent-encode it)");
    }
    if (c == '%' &&
        (i + 2 >= tail.size() || !std::isxdigit(static_cast<unsigned char>(tail[i + 1])) ||
         !std::isxdigit(static_cast<unsigned char>(tail[i + 2])))) {
      throw fail("its path has a '%' that is not followed by two hex digits");
    }
  }
  return scheme + "://" + std::string(authority) + std::string(tail.empty() ? "/" : tail);
}

namespace {

std::string show_double(double v) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc{} ? std::string(buf, end) : std::to_string(v);
}

// Lines of an INI file, one key at a time.
class IniWriter {
 public:
  void section(std::string_view name) {
    if (!out_.empty()) out_ += "\n";
    out_ += "[" + std::string(name) + "]\n";
  }
  void key(std::string_view k, std::string_view v) {
    out_ += std::string(k) + " = " + std::string(v) + "\n";
  }
  void key(std::string_view k, milliseconds v) { key(k, show(v)); }
  void number(std::string_view k, uint64_t v) { key(k, std::to_string(v)); }
  void size(std::string_view k, uint64_t v) { key(k, show_size(v)); }
  void comment(std::string_view text) { out_ += "# " + std::string(text) + "\n"; }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

void write_server(IniWriter& w, const ServerSettings& s) {
  w.section("server");
  w.key("address", s.address);
  w.number("port", s.port);
  w.key("name", s.name);
  w.number("max_connections", s.max_connections);
  w.key("idle_timeout", s.idle_timeout);
  w.key("header_timeout", s.header_timeout);
  w.key("send_timeout", s.send_timeout);
  w.key("drain_timeout", s.drain_timeout);
  w.size("max_request_line", s.max_request_line);
  w.size("max_header_bytes", s.max_header_bytes);
  w.number("max_headers", s.max_headers);
  w.size("max_body", s.max_body);
  if (s.workers == 0) {
    w.key("workers", "auto");
  } else {
    w.number("workers", s.workers);
  }
}

void write_tls(IniWriter& w, const TlsSettings& s) {
  w.section("tls");
  w.number("port", s.port);
  w.key("address", s.address);
  for (size_t i = 0; i < s.certificates.size(); ++i) {
    w.key("certificate", s.certificates[i]);
    if (i < s.keys.size()) w.key("key", s.keys[i]);
  }
  for (const auto& o : s.ocsp) w.key("ocsp", o);
  w.key("handshake_timeout", s.handshake_timeout);
  w.key("ktls", s.ktls);
}

void write_log(IniWriter& w, const LogSettings& s) {
  w.section("log");
  w.key("level", s.level);
  w.key("file", s.file);
  w.key("access", s.access);
  w.key("access_format", s.access_format);
}

void write_admin(IniWriter& w, const AdminSettings& s) {
  w.section("admin");
  w.key("allow", s.allow);
  w.key("token_file", s.token_file);
}

}  // namespace

namespace {

// `site`: a [site]'s keys, without the replica's own (capacity, types_file).
void write_content(IniWriter& w, const ContentSettings& c, bool site) {
  w.key("root", c.root);
  w.key("page", c.page);
  w.key("origin", c.origin);
  w.key("index", c.index);
  w.key("max_age", c.max_age);
  if (!site) w.number("capacity", c.capacity);
  w.key("cache_dir", c.cache_dir);
  w.size("cache_size", c.cache_size);
  w.size("cache_memory", c.cache_memory);
  w.number("cache_entries", c.cache_entries);
  w.number("max_variants", c.max_variants);
  w.key("default_ttl", c.default_ttl);
  w.key("stale_while_revalidate", c.stale_while_revalidate);
  w.key("stale_if_error", c.stale_if_error);
  w.key("stale_if_disconnected", c.stale_if_disconnected);
  w.key("origin_timeout", c.origin_timeout);
  w.size("origin_min_rate", c.origin_min_rate);
  w.key("ca_file", c.ca_file);
  if (!site) w.key("types_file", c.types_file);
}

// The sections both daemons have.
void write_common(IniWriter& w, const ServerSettings& server, const TlsSettings& tls,
                  const LogSettings& log, const AdminSettings& admin) {
  write_server(w, server);
  write_tls(w, tls);
  write_log(w, log);
  write_admin(w, admin);
}

}  // namespace

std::string to_ini(const ReplicaSettings& s) {
  IniWriter w;
  write_common(w, s.server, s.tls, s.log, s.admin);
  w.section("content");
  write_content(w, s.content, false);
  for (const auto& site : s.sites) {
    w.section("site " + site.name);
    std::string hosts;
    for (const auto& h : site.hosts) hosts += (hosts.empty() ? "" : " ") + h;
    w.key("hosts", hosts);
    if (!site.certificate.empty()) {
      w.key("certificate", site.certificate);
      w.key("key", site.key);
    }
    write_content(w, site.content, true);
  }
  return w.take();
}

std::string to_ini(const BalancerSettings& s) {
  IniWriter w;
  write_common(w, s.server, s.tls, s.log, s.admin);
  w.key("state_dir", s.state_dir);  // in [admin], written last
  w.section("replicas");
  if (!s.servers_file.empty()) {
    w.comment("servers_file = " + s.servers_file + " (its replicas are among those below)");
  }
  for (const auto& r : s.replicas) w.key("replica", replica_entry_text(r));
  w.section("probe");
  w.key("interval", s.probe.interval);
  w.key("timeout", s.probe.timeout);
  w.number("rise", s.probe.rise);
  w.number("fall", s.probe.fall);
  w.number("stream", s.probe.stream);
  w.section("balance");
  w.key("policy", to_string(s.balance.policy));
  w.number("fallbacks", s.balance.fallbacks);
  w.key("retry_after", s.balance.retry_after);
  w.key("hash_load_factor", show_double(s.balance.hash_load_factor));
  return w.take();
}

namespace {

// [content]'s keys, setting `c`; a [site] takes the same but capacity and types_file.
std::vector<KeySpec> content_keys(const IniFile& file, ContentSettings& c) {
  return {
      {"root", [&](const Entry& e) { c.root = resolve(file, trim(e.value)); }},
      {"page", [&](const Entry& e) { c.page = resolve(file, trim(e.value)); }},
      {"origin",
       [&](const Entry& e) {
         const std::string_view v = trim(e.value);
         if (v.empty()) {
           c.origin.clear();
           return;
         }
         try {
           c.origin = normalize_origin(v);
         } catch (const Error& err) {
           bad(file, e, err.what());
         }
       }},
      {"index",
       [&](const Entry& e) {
         const std::string_view v = trim(e.value);
         if (v.empty() || v.find('/') != std::string_view::npos || v == "." || v == "..") {
           bad(file, e, q(e.value) + " is not a file name (use e.g. index.html)");
         }
         c.index = std::string(v);
       }},
      {"max_age", [&](const Entry& e) { c.max_age = duration_of(file, e, kFreshnessRange); }},
      {"capacity",
       [&](const Entry& e) {
         c.capacity = static_cast<uint32_t>(uint_of(file, e, 1, kMaxConnections));
       }},
      {"cache_dir",
       [&](const Entry& e) {
         const std::string_view v = trim(e.value);
         if (v.empty()) bad(file, e, "must name a directory");
         c.cache_dir = resolve(file, v);
       }},
      {"cache_size",
       [&](const Entry& e) { c.cache_size = size_of(file, e, 64 * 1024, 1ULL << 50); }},
      {"cache_memory", [&](const Entry& e) { c.cache_memory = size_of(file, e, 0, 1ULL << 40); }},
      {"cache_entries",
       [&](const Entry& e) { c.cache_entries = uint_of(file, e, 1, 100'000'000); }},
      {"max_variants",
       [&](const Entry& e) { c.max_variants = static_cast<uint32_t>(uint_of(file, e, 1, 1024)); }},
      {"default_ttl",
       [&](const Entry& e) { c.default_ttl = duration_of(file, e, kFreshnessRange); }},
      {"stale_while_revalidate",
       [&](const Entry& e) { c.stale_while_revalidate = duration_of(file, e, kFreshnessRange); }},
      {"stale_if_error",
       [&](const Entry& e) { c.stale_if_error = duration_of(file, e, kFreshnessRange); }},
      {"stale_if_disconnected",
       [&](const Entry& e) { c.stale_if_disconnected = duration_of(file, e, kFreshnessRange); }},
      {"origin_timeout",
       [&](const Entry& e) { c.origin_timeout = duration_of(file, e, kTimeoutRange); }},
      {"origin_min_rate",
       [&](const Entry& e) { c.origin_min_rate = size_of(file, e, 0, 1ULL << 30); }},
      {"ca_file",
       [&](const Entry& e) {
         const std::string_view v = trim(e.value);
         c.ca_file = v.empty() ? std::string() : resolve(file, v);
       }},
      {"types_file",
       [&](const Entry& e) {
         const std::string_view v = trim(e.value);
         c.types_file = v.empty() ? std::string() : resolve(file, v);
       }},
  };
}

constexpr std::string_view kReplicaWideKeys[] = {"capacity", "types_file"};
constexpr std::string_view kSitePrefix = "site ";
constexpr size_t kMaxSiteName = 63;

// What replica_settings takes up only after every key is read: the entries
// of each [site NAME], applied over a copy of the finished [content].
struct SitePending {
  std::string section;  // "site NAME"
  int line = 0;         // of its first heading
  std::vector<const Entry*> entries;
};

std::vector<SectionSpec> replica_spec(const IniFile& file, ReplicaSettings& r,
                                      std::vector<SitePending>& sites) {
  std::vector<SectionSpec> spec = {
      server_section(file, r.server),
      tls_section(file, r.tls),
      log_section(file, r.log),
      admin_section(file, r.admin),
      {"content", content_keys(file, r.content)},
  };
  for (const auto& heading : file.sections) {
    if (!heading.name.starts_with(kSitePrefix)) continue;
    const bool seen = std::any_of(sites.begin(), sites.end(),
                                  [&](const SitePending& p) { return p.section == heading.name; });
    if (seen) continue;
    sites.push_back(SitePending{heading.name, heading.line, {}});
  }
  for (size_t i = 0; i < sites.size(); ++i) {
    SectionSpec site{sites[i].section, {}};
    const auto record = [&sites, i](const Entry& e) { sites[i].entries.push_back(&e); };
    site.keys.push_back({"hosts", record});
    site.keys.push_back({"certificate", record});
    site.keys.push_back({"key", record});
    ContentSettings scratch;
    for (const auto& k : content_keys(file, scratch)) {
      if (!one_of(k.name, kReplicaWideKeys)) site.keys.push_back({k.name, record});
    }
    spec.push_back(std::move(site));
  }
  return spec;
}

// What balancer_settings takes up only after every key is read.
struct BalancerPending {
  std::vector<const Entry*> replica_entries;
  const Entry* servers_entry = nullptr;
};

// [admin] of the balancer: the replica's keys, and where its state is kept.
SectionSpec balancer_admin_section(const IniFile& file, BalancerSettings& b) {
  SectionSpec spec = admin_section(file, b.admin);
  spec.keys.push_back({"state_dir", [&](const Entry& e) {
                         const std::string_view v = trim(e.value);
                         b.state_dir = v.empty() ? std::string() : resolve(file, v);
                       }});
  return spec;
}

std::vector<SectionSpec> balancer_spec(const IniFile& file, BalancerSettings& b,
                                       BalancerPending& pending) {
  return {
      server_section(file, b.server),
      tls_section(file, b.tls),
      log_section(file, b.log),
      balancer_admin_section(file, b),
      {"replicas",
       {
           {"servers_file",
            [&](const Entry& e) {
              const std::string_view v = trim(e.value);
              b.servers_file = v.empty() ? std::string() : resolve(file, v);
              pending.servers_entry = &e;
            }},
           {"replica", [&](const Entry& e) { pending.replica_entries.push_back(&e); }, true},
       }},
      {"probe",
       {
           {"interval",
            [&](const Entry& e) { b.probe.interval = duration_of(file, e, kProbeIntervalRange); }},
           {"timeout",
            [&](const Entry& e) { b.probe.timeout = duration_of(file, e, kTimeoutRange); }},
           {"rise",
            [&](const Entry& e) {
              b.probe.rise = static_cast<uint32_t>(uint_of(file, e, 1, 100));
            }},
           {"fall",
            [&](const Entry& e) {
              b.probe.fall = static_cast<uint32_t>(uint_of(file, e, 1, 100));
            }},
           {"stream",
            [&](const Entry& e) {
              b.probe.stream = static_cast<uint32_t>(uint_of(file, e, 0, 3600));
            }},
       }},
      {"balance",
       {
           {"policy",
            [&](const Entry& e) {
              b.balance.policy = *policy_from_string(choice_of(file, e, "policy", kPolicies));
            }},
           {"fallbacks",
            [&](const Entry& e) {
              b.balance.fallbacks = static_cast<uint32_t>(uint_of(file, e, 0, 64));
            }},
           {"retry_after",
            [&](const Entry& e) {
              b.balance.retry_after = duration_of(file, e, kRetryAfterRange);
            }},
           {"hash_load_factor",
            [&](const Entry& e) {
              const auto v = parse_double(e.value);
              if (!v || *v <= 1.0 || *v > kMaxHashLoadFactor) {
                bad(file, e, q(e.value) + " is not a number above 1.0 and at most 100 (e.g. 1.25)");
              }
              b.balance.hash_load_factor = *v;
            }},
       }},
  };
}

bool is_site_name(std::string_view n) {
  return !n.empty() && n.size() <= kMaxSiteName && std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

// "a.example, b.example www.b.example": host names (or [v6] literals),
// without ports, in host_key() form.
std::vector<std::string> hosts_of(const IniFile& f, const Entry& e) {
  std::vector<std::string> out;
  const std::string_view all = e.value;
  for (size_t pos = 0; pos < all.size();) {
    const size_t b = all.find_first_not_of(" \t,", pos);
    if (b == std::string_view::npos) break;
    const size_t end = std::min(all.size(), all.find_first_of(" \t,", b));
    const std::string_view word = all.substr(b, end - b);
    pos = end;
    const auto key = host_key(word);
    const bool has_port =
        word.front() == '[' ? !word.ends_with(']') : word.find(':') != std::string_view::npos;
    if (!key || has_port) {
      bad(f, e, q(word) + " is not a host name (use e.g. www.example.com, without a port)");
    }
    out.push_back(*key);
  }
  if (out.empty()) bad(f, e, "names no host (use e.g. hosts = example.com www.example.com)");
  return out;
}

// Each [site NAME] over a copy of [content] (its source cleared); a host
// may belong to one site only.
void build_sites(const IniFile& f, ReplicaSettings& r, const std::vector<SitePending>& pending) {
  std::map<std::string, std::string> owner;  // host -> "[site NAME]"
  for (const auto& p : pending) {
    const std::string here = f.path + ":" + std::to_string(p.line) + ": [" + p.section + "]: ";
    SiteSettings site;
    site.name = std::string(trim(std::string_view(p.section).substr(kSitePrefix.size())));
    if (!is_site_name(site.name)) {
      throw Error(here + q(site.name) +
                  " is not a site name (a-z, 0-9, '-' and '_', at most 63 characters)");
    }
    if (site.name == kDefaultSite) {
      throw Error(here + "'default' is [content]'s site; name this one otherwise");
    }
    if (std::any_of(r.sites.begin(), r.sites.end(),
                    [&](const SiteSettings& s) { return s.name == site.name; })) {
      throw Error(here + "a site of this name is already defined");
    }
    site.content = r.content;
    site.content.root.clear();
    site.content.page.clear();
    site.content.origin.clear();
    const std::vector<KeySpec> keys = content_keys(f, site.content);
    for (const Entry* e : p.entries) {
      if (e->key == "hosts") {
        for (auto& h : hosts_of(f, *e)) {
          const auto [it, fresh] = owner.emplace(h, "[" + p.section + "]");
          if (!fresh) bad(f, *e, q(h) + " is also a host of " + it->second);
          site.hosts.push_back(std::move(h));
        }
        continue;
      }
      if (e->key == "certificate" || e->key == "key") {
        (e->key == "key" ? site.key : site.certificate) = file_of(f, *e);
        continue;
      }
      for (const auto& k : keys) {
        if (k.name == e->key) k.set(*e);
      }
    }
    if (site.hosts.empty()) throw Error(here + "no hosts (set hosts = example.com ...)");
    if (site.certificate.empty() != site.key.empty()) {
      throw Error(here +
                  (site.key.empty() ? "certificate without a key" : "key without a certificate") +
                  " (give both, or neither)");
    }
    r.sites.push_back(std::move(site));
  }
}

std::vector<KnownKey> keys_of(const std::vector<SectionSpec>& spec) {
  std::vector<KnownKey> out;
  for (const auto& s : spec) {
    for (const auto& k : s.keys) out.push_back({std::string(s.name), std::string(k.name)});
  }
  return out;
}

}  // namespace

ReplicaSettings replica_settings(const IniFile& file) {
  ReplicaSettings r;
  std::vector<SitePending> sites;
  const std::vector<SectionSpec> spec = replica_spec(file, r, sites);
  apply(file, spec);
  build_sites(file, r, sites);
  return r;
}

std::vector<KnownKey> replica_keys() {
  const IniFile none;
  ReplicaSettings r;
  std::vector<SitePending> sites;
  auto keys = keys_of(replica_spec(none, r, sites));
  // The other keys of a [site] are [content]'s, described there.
  keys.push_back({"site NAME", "hosts"});
  keys.push_back({"site NAME", "certificate"});
  keys.push_back({"site NAME", "key"});
  return keys;
}

bool has_default_site(const ReplicaSettings& s) {
  return !s.content.root.empty() || !s.content.page.empty() || !s.content.origin.empty();
}

std::string site_cache_dir(const SiteSettings& site) {
  return site.content.cache_dir + "/sites/" + site.name;
}

std::vector<KnownKey> balancer_keys() {
  const IniFile none;
  BalancerSettings b;
  BalancerPending pending;
  return keys_of(balancer_spec(none, b, pending));
}

BalancerSettings balancer_settings(const IniFile& file) {
  BalancerSettings b;
  BalancerPending pending;
  const std::vector<SectionSpec> spec = balancer_spec(file, b, pending);
  apply(file, spec);
  const std::vector<const Entry*>& replica_entries = pending.replica_entries;
  const Entry* servers_entry = pending.servers_entry;

  // Replicas last: a bare host takes [server] port, which may come later in the file.
  std::vector<Listed> listed;
  std::map<std::string, std::string> first;  // canonical address -> where
  const auto add = [&](Listed l) {
    const auto [it, fresh] = first.emplace(canonical(l.entry.address), l.source);
    if (!fresh) {
      throw Error(l.source + ": replica " + l.entry.address.str() + " is listed twice (also at " +
                  it->second + ")");
    }
    b.replicas.push_back(std::move(l.entry));
  };
  for (const Entry* e : replica_entries) {
    ReplicaEntry r;
    try {
      r = parse_replica_entry(e->value, b.server.port);
    } catch (const Error& err) {
      bad(file, *e, err.what());
    }
    if (r.address.port == 0) {
      bad(file, *e, q(trim(e->value)) + " needs a port, since [server] port is 0");
    }
    add(Listed{std::move(r), file.path + ":" + std::to_string(e->line)});
  }
  if (!b.servers_file.empty()) {
    std::string text;
    try {
      text = read_config_file(b.servers_file);
    } catch (const Error& err) {
      bad(file, *servers_entry, err.what());
    }
    for (auto& l : servers_with_lines(text, b.servers_file, b.server.port)) add(std::move(l));
  }
  return b;
}

ReplicaEntry parse_replica_entry(std::string_view text, uint16_t default_port) {
  const std::string_view all = trim(text);
  std::vector<std::string_view> words;
  for (size_t pos = 0; pos < all.size();) {
    const size_t b = all.find_first_not_of(kSpace, pos);
    if (b == std::string_view::npos) break;
    const size_t e = std::min(all.size(), all.find_first_of(kSpace, b));
    words.push_back(all.substr(b, e - b));
    pos = e;
  }
  if (words.empty()) throw Error("'' is not an address (use host, host:port or [v6]:port)");
  const auto hp = parse_host_port(words[0], default_port);
  if (!hp) throw Error(q(words[0]) + " is not an address (use host, host:port or [v6]:port)");
  ReplicaEntry r;
  r.address = *hp;
  bool weighted = false, named = false, tls = false;
  const auto once = [&](bool& given, std::string_view name) {
    if (given) throw Error(q(all) + ": " + std::string(name) + " is given twice");
    given = true;
  };
  for (size_t k = 1; k < words.size(); ++k) {
    const std::string_view w = words[k];
    const size_t eq = w.find('=');
    const std::string option = eq == std::string_view::npos ? "" : lowered(w.substr(0, eq));
    const std::string_view value = eq == std::string_view::npos ? "" : w.substr(eq + 1);
    if (option == "weight") {
      once(weighted, "weight");
      const auto v = parse_uint(value);
      if (!v || *v < 1 || *v > kMaxWeight) {
        throw Error(q(all) + ": weight " + q(value) + " is not a whole number from 1 to " +
                    std::to_string(kMaxWeight));
      }
      r.weight = static_cast<uint32_t>(*v);
    } else if (option == "host") {
      once(named, "host");
      if (!is_dns_name(value)) {
        throw Error(q(all) + ": host " + q(value) +
                    " is not a DNS name (letters, digits, '-' and dots, e.g. "
                    "cdn1.example.com)");
      }
      r.public_host = lowered(value);
    } else if (option == "tls_port") {
      once(tls, "tls_port");
      const auto v = parse_uint(value);
      if (!v || *v < 1 || *v > 65535) {
        throw Error(q(all) + ": tls_port " + q(value) + " is not a port (1 to 65535)");
      }
      r.tls_port = static_cast<uint16_t>(*v);
    } else {
      throw Error(q(all) + ": " + q(w) + " is not an option (use weight=N, host=NAME, tls_port=N)");
    }
  }
  if (named && !tls) {
    throw Error(q(all) + ": host=" + r.public_host +
                " names the replica's https:// URL: give its tls_port=N too");
  }
  return r;
}

std::string replica_entry_text(const ReplicaEntry& r) {
  std::string out = r.address.str();
  if (r.weight != 1) out += " weight=" + std::to_string(r.weight);
  if (!r.public_host.empty()) out += " host=" + r.public_host;
  if (r.tls_port != 0) out += " tls_port=" + std::to_string(r.tls_port);
  return out;
}

bool is_dns_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 253) return false;
  size_t label = 0;
  char prev = '.';
  for (const char c : name) {
    if (c == '.') {
      if (label == 0 || prev == '-') return false;
      label = 0;
    } else {
      const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
      if (!alnum && c != '-') return false;
      if (c == '-' && label == 0) return false;
      if (++label > 63) return false;
    }
    prev = c;
  }
  return label > 0 && prev != '-';
}

std::vector<ReplicaEntry> parse_servers(std::string_view text, const std::string& path,
                                        uint16_t default_port) {
  std::vector<ReplicaEntry> out;
  for (auto& l : servers_with_lines(text, path, default_port)) out.push_back(std::move(l.entry));
  return out;
}

std::vector<ReplicaEntry> load_servers(const std::string& path, uint16_t default_port) {
  return parse_servers(read_config_file(path), path, default_port);
}

namespace {

// A site's content settings, under `section` ("[content]", "[site NAME]").
void check_content(const ContentSettings& c, const std::string& section,
                   const std::string& prefix) {
  check_content_source(c, section, prefix);
  const std::string_view o = c.origin;
  if (!o.empty() && o.substr(0, 7) != "http://" && o.substr(0, 8) != "https://") {
    throw Error(prefix + section + " origin: " + q(o) + " must start with http:// or https://");
  }
  if (c.index.empty() || c.index.find('/') != std::string::npos) {
    throw Error(prefix + section + " index: " + q(c.index) + " is not a file name");
  }
  check_duration(c.max_age, kFreshnessRange, section + " max_age", prefix);
  if (c.cache_dir.empty()) throw Error(prefix + section + " cache_dir: must not be empty");
  check_duration(c.default_ttl, kFreshnessRange, section + " default_ttl", prefix);
  check_duration(c.stale_while_revalidate, kFreshnessRange, section + " stale_while_revalidate",
                 prefix);
  check_duration(c.stale_if_error, kFreshnessRange, section + " stale_if_error", prefix);
  check_duration(c.stale_if_disconnected, kFreshnessRange, section + " stale_if_disconnected",
                 prefix);
  check_duration(c.origin_timeout, kTimeoutRange, section + " origin_timeout", prefix);
  // cache_size bounds the edge cache only: with root= or page= the memory
  // tier is the whole bound, and cache_size means nothing.
  if (!o.empty() && c.cache_memory > c.cache_size) {
    throw Error(prefix + section + " cache_memory: " + std::to_string(c.cache_memory) +
                " bytes is more than cache_size (" + std::to_string(c.cache_size) + ")");
  }
}

}  // namespace

void validate(const ReplicaSettings& s, const std::string& path) {
  const std::string prefix = path + ": ";
  check_server(s.server, prefix);
  check_tls(s.tls, s.server, prefix);
  check_log(s.log, prefix);
  check_admin(s.admin, prefix);
  const ContentSettings& c = s.content;
  if (c.capacity < 1 || c.capacity > kMaxConnections) {
    throw Error(prefix + "[content] capacity: " + std::to_string(c.capacity) +
                " is out of range (allowed: 1 to " + std::to_string(kMaxConnections) + ")");
  }
  // Beside [site] sections, [content] may name no source: then it only
  // gives the sites' defaults, and there is no default site.
  if (s.sites.empty() || has_default_site(s)) check_content(c, "[content]", prefix);
  std::map<std::string, std::string> owner;
  for (const auto& site : s.sites) {
    const std::string section = "[site " + site.name + "]";
    if (!is_site_name(site.name) || site.name == kDefaultSite) {
      throw Error(prefix + section + ": not a site name");
    }
    if (site.hosts.empty()) throw Error(prefix + section + ": no hosts");
    for (const auto& h : site.hosts) {
      const auto [it, fresh] = owner.emplace(h, section);
      if (!fresh) throw Error(prefix + section + " hosts: " + q(h) + " is also in " + it->second);
    }
    check_content(site.content, section, prefix);
    if (site.certificate.empty() != site.key.empty()) {
      throw Error(prefix + section + ": a certificate needs its key (give both, or neither)");
    }
    if (!site.certificate.empty() && !s.tls.enabled()) {
      throw Error(prefix + section +
                  " certificate: HTTPS is off (set [tls] port, certificate "
                  "and key; the site's certificate is added to theirs)");
    }
  }
}

void validate(const BalancerSettings& s, const std::string& path) {
  const std::string prefix = path + ": ";
  check_server(s.server, prefix);
  check_tls(s.tls, s.server, prefix);
  check_log(s.log, prefix);
  check_admin(s.admin, prefix);
  if (s.replicas.empty()) {
    throw Error(prefix + "no replicas: set [replicas] replica= or servers_file=");
  }
  std::map<std::string, std::string> seen;
  for (const auto& [r, weight, public_host, tls_port] : s.replicas) {
    if (!public_host.empty() && (!is_dns_name(public_host) || tls_port == 0)) {
      throw Error(prefix + "[replicas]: replica " + r.str() + " has host " + q(public_host) +
                  " (a DNS name, with a tls_port)");
    }
    if (r.port == 0) throw Error(prefix + "[replicas]: replica " + q(r.host) + " has no port");
    if (!seen.emplace(canonical(r), r.str()).second) {
      throw Error(prefix + "[replicas]: replica " + r.str() + " is listed twice");
    }
    if (weight < 1 || weight > kMaxWeight) {
      throw Error(prefix + "[replicas]: replica " + r.str() + " has weight " +
                  std::to_string(weight) + " (use 1 to " + std::to_string(kMaxWeight) + ")");
    }
  }
  check_duration(s.probe.interval, kProbeIntervalRange, "[probe] interval", prefix);
  check_duration(s.probe.timeout, kTimeoutRange, "[probe] timeout", prefix);
  if (s.probe.timeout >= s.probe.interval) {
    throw Error(prefix + "[probe] timeout: " + show(s.probe.timeout) +
                " must be shorter than interval (" + show(s.probe.interval) + ")");
  }
  if (s.probe.stream > 1 && s.probe.interval > kMaxStreamInterval) {
    throw Error(prefix + "[probe] interval: " + show(s.probe.interval) +
                " is longer than a status stream allows (at most " + show(kMaxStreamInterval) +
                " while stream = " + std::to_string(s.probe.stream) +
                "; set [probe] stream = 0 to poll instead)");
  }
  if (s.probe.rise < 1) throw Error(prefix + "[probe] rise: must be at least 1");
  if (s.probe.fall < 1) throw Error(prefix + "[probe] fall: must be at least 1");
  check_duration(s.balance.retry_after, kRetryAfterRange, "[balance] retry_after", prefix);
  if (!(s.balance.hash_load_factor > 1.0) || !(s.balance.hash_load_factor <= kMaxHashLoadFactor)) {
    throw Error(prefix + "[balance] hash_load_factor: must be above 1.0 and at most 100");
  }
}

uint32_t resolve_workers(uint32_t configured) {
  if (configured != 0) return configured;
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  return online < 1 ? 1 : static_cast<uint32_t>(std::min<long>(online, kMaxWorkers));
}

}  // namespace cdn::config
