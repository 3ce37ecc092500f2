// SPDX-License-Identifier: MIT
#include "common/config/ini.hpp"

#include <arpa/inet.h>
#include <ini.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>

#include "common/text/text.hpp"

namespace cdn::config {

namespace {

constexpr size_t kMaxFileSize = 1 << 20;

using text::iequals;
using text::to_lower;
using text::trim;

// A line quoted in a message: trimmed and cut short.
std::string quote(std::string_view s) {
  s = trim(s);
  std::string out = "'";
  if (s.size() > 60) {
    out.append(s.substr(0, 57));
    out.append("...");
  } else {
    out.append(s);
  }
  out.push_back('\'');
  return out;
}

// State shared by the reader and the handler during one inih parse. inih
// hands the reader a fixed buffer and asks for one line at a time; the reader
// feeds it exactly one source line per call, which is how line numbers are
// known without INI_HANDLER_LINENO (Debian builds inih without it).
struct ParseState {
  std::string_view text;
  size_t pos = 0;
  int line = 0;              // number of the line last handed to inih
  std::string current_line;  // that line, as written (for messages)
  std::string section;       // section of that line, as we read it
  IniFile* file = nullptr;
  std::exception_ptr error;  // first problem found; rethrown after the parse
  int error_line = 0;

  void fail(const std::string& message) {
    if (error) return;
    error = std::make_exception_ptr(Error(message));
    error_line = line;
  }
};

// One rule for both comment characters: '#' or ';' at the start of a line,
// or after a blank, starts a comment ("port = 80 # web" and "port = 80 ; web"
// are both port 80). Without a blank before it the character is part of the
// value ("origin = http://h/a#b" keeps its '#', to be refused as a fragment).
std::string_view strip_inline_comment(std::string_view content) {
  for (size_t i = 1; i < content.size(); ++i) {
    if ((content[i] == '#' || content[i] == ';') &&
        (content[i - 1] == ' ' || content[i - 1] == '\t')) {
      content = content.substr(0, i);
      break;
    }
  }
  while (!content.empty() && (content.back() == ' ' || content.back() == '\t')) {
    content.remove_suffix(1);
  }
  return content;
}

std::string at(const std::string& path, int line) { return path + ":" + std::to_string(line); }

char* read_line(char* str, int num, void* stream) noexcept {
  auto* st = static_cast<ParseState*>(stream);
  try {
    if (st->pos >= st->text.size() || num < 3) return nullptr;
    const size_t nl = st->text.find('\n', st->pos);
    const size_t end = nl == std::string_view::npos ? st->text.size() : nl;
    std::string_view raw = st->text.substr(st->pos, end - st->pos);
    st->pos = nl == std::string_view::npos ? st->text.size() : nl + 1;
    ++st->line;
    st->current_line.assign(raw);
    if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
    if (st->line == 1 && raw.substr(0, 3) == "\xEF\xBB\xBF") raw.remove_prefix(3);  // UTF-8 BOM
    // Leading whitespace is dropped so that inih never sees a continuation line.
    std::string_view content = raw;
    if (const size_t b = content.find_first_not_of(" \t"); b != std::string_view::npos) {
      content.remove_prefix(b);
    } else {
      content = {};
    }

    const size_t room = static_cast<size_t>(num) - 2;  // '\n' and '\0'
    if (raw.find('\0') != std::string_view::npos) {
      st->fail(at(st->file->path, st->line) + ": contains a NUL byte");
      content = {};
    } else if (raw.size() > std::min(room, kMaxLineLength)) {
      st->fail(at(st->file->path, st->line) + ": line is longer than " +
               std::to_string(std::min(room, kMaxLineLength)) + " characters");
      content = {};
    } else if (!content.empty() && content.front() != '#' && content.front() != ';') {
      content = strip_inline_comment(content);
    }
    if (!content.empty() && content.front() == '[') {
      const size_t close = content.find(']');
      if (close != std::string_view::npos) {
        const std::string_view rest = trim(content.substr(close + 1));
        if (!rest.empty()) {
          st->fail(at(st->file->path, st->line) + ": syntax error: " + quote(raw) +
                   " (text after the section heading)");
        }
        st->section.assign(trim(content.substr(1, close - 1)));
        st->file->sections.push_back(Section{st->section, st->line});
      }
    }
    if (!content.empty()) std::memcpy(str, content.data(), content.size());
    str[content.size()] = '\n';
    str[content.size() + 1] = '\0';
    return str;
  } catch (...) {
    if (!st->error) st->error = std::current_exception();
    return nullptr;
  }
}

int on_entry(void* user, const char* /*section*/, const char* name, const char* value) noexcept {
  auto* st = static_cast<ParseState*>(user);
  try {
    Entry e;
    e.section = st->section;  // ours, not inih's: inih cuts section names at 50 characters
    e.key = name != nullptr ? name : "";
    e.value = value != nullptr ? value : "";
    e.line = st->line;
    if (e.key.empty()) {
      st->fail(at(st->file->path, st->line) + ": syntax error: " + quote(st->current_line) +
               " (no key before '=')");
      return 0;
    }
    st->file->entries.push_back(std::move(e));
    return 1;
  } catch (...) {
    if (!st->error) st->error = std::current_exception();
    return 0;
  }
}

// Parses "123" or "1.5" into an integer part and a fraction (digits, scale).
struct Decimal {
  uint64_t whole = 0;
  uint64_t frac = 0;
  uint64_t scale = 1;  // 10^(fraction digits)
};

std::optional<Decimal> parse_decimal(std::string_view s, size_t& used) {
  Decimal d;
  size_t i = 0;
  bool digits = false;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    const uint64_t digit = static_cast<uint64_t>(s[i] - '0');
    if (d.whole > (std::numeric_limits<uint64_t>::max() - digit) / 10) return std::nullopt;
    d.whole = d.whole * 10 + digit;
    digits = true;
    ++i;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    bool frac_digits = false;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (d.scale < 1'000'000'000'000ULL) {  // further digits cannot matter
        d.frac = d.frac * 10 + static_cast<uint64_t>(s[i] - '0');
        d.scale *= 10;
      }
      frac_digits = true;
      ++i;
    }
    if (!frac_digits) return std::nullopt;  // "1." is a typo, not a number
    digits = true;
  }
  if (!digits) return std::nullopt;
  used = i;
  return d;
}

bool valid_hostname(std::string_view h) {
  if (h.empty() || h.size() > 253) return false;
  for (const char c : h) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_';
    if (!ok) return false;
  }
  return h.front() != '.' && h.front() != '-';
}

bool valid_ipv6(std::string_view h) {
  if (h.empty() || h.size() >= INET6_ADDRSTRLEN) return false;
  const std::string copy(h);
  in6_addr addr{};
  return inet_pton(AF_INET6, copy.c_str(), &addr) == 1;
}

}  // namespace

IniFile parse_ini(std::string_view text, const std::string& path) {
  IniFile file;
  file.path = path;
  ParseState st;
  st.text = text;
  st.file = &file;
  const int rc = ini_parse_stream(read_line, &st, on_entry, &st);
  // Our own error comes first unless inih found a syntax error on an earlier line.
  if (rc > 0 && (!st.error || rc < st.error_line)) {
    // Recover the offending line for the message.
    std::string_view rest = text;
    for (int n = 1; n < rc; ++n) {
      const size_t nl = rest.find('\n');
      rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
    }
    const std::string_view line = rest.substr(0, rest.find('\n'));
    const std::string_view t = trim(line);
    std::string why = "expected [section], key = value or a comment";
    if (!t.empty() && t.front() == '[') why = "section heading without ']'";
    throw Error(at(path, rc) + ": syntax error: " + quote(line) + " (" + why + ")");
  }
  if (st.error) std::rethrow_exception(st.error);
  if (rc == -2) throw Error(path + ": out of memory while parsing");
  if (rc != 0) throw Error(path + ": cannot parse (inih error " + std::to_string(rc) + ")");
  return file;
}

std::string read_config_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rbe"), &std::fclose);
  if (!f) throw Error(path + ": cannot read: " + std::strerror(errno));
  std::string out;
  char buf[8192];
  for (;;) {
    const size_t n = std::fread(buf, 1, sizeof buf, f.get());
    out.append(buf, n);
    if (out.size() > kMaxFileSize) {
      throw Error(path + ": cannot read: larger than " + std::to_string(kMaxFileSize) + " bytes");
    }
    if (n < sizeof buf) {
      if (std::ferror(f.get()) != 0) throw Error(path + ": cannot read: " + std::strerror(errno));
      break;
    }
  }
  return out;
}

IniFile load_ini(const std::string& path) { return parse_ini(read_config_file(path), path); }

std::optional<std::chrono::milliseconds> parse_duration(std::string_view s) {
  s = trim(s);
  size_t used = 0;
  const auto d = parse_decimal(s, used);
  if (!d) return std::nullopt;
  const std::string_view unit = trim(s.substr(used));
  uint64_t ms_per_unit = 0;
  if (unit.empty() || iequals(unit, "s")) {
    ms_per_unit = 1000;
  } else if (iequals(unit, "ms")) {
    ms_per_unit = 1;
  } else if (iequals(unit, "m")) {
    ms_per_unit = 60'000;
  } else if (iequals(unit, "h")) {
    ms_per_unit = 3'600'000;
  } else if (iequals(unit, "d")) {
    ms_per_unit = 86'400'000;
  } else {
    return std::nullopt;
  }
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / 2;
  if (d->whole > kMax / ms_per_unit) return std::nullopt;
  // Fraction of a unit, rounded to the nearest millisecond. frac < scale <= 1e12
  // and ms_per_unit <= 8.64e7, so frac * ms_per_unit (< 8.64e19) fits in 64 bits.
  const uint64_t frac_ms = (d->frac * ms_per_unit + d->scale / 2) / d->scale;
  const uint64_t total = d->whole * ms_per_unit + frac_ms;
  if (total > kMax) return std::nullopt;
  return std::chrono::milliseconds(static_cast<int64_t>(total));
}

std::optional<uint64_t> parse_uint(std::string_view s) {
  s = trim(s);
  if (s.empty() || s.front() < '0' || s.front() > '9') return std::nullopt;
  uint64_t v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<uint64_t> parse_size(std::string_view s) {
  s = trim(s);
  size_t digits = 0;
  while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
  if (digits == 0) return std::nullopt;
  const auto n = parse_uint(s.substr(0, digits));
  if (!n) return std::nullopt;
  std::string_view unit = trim(s.substr(digits));
  // "K", "KB", "KiB", "k": all powers of 1024 (a config file is not a disk label).
  if (unit.size() == 3 && (unit[1] == 'i' || unit[1] == 'I') && to_lower(unit[2]) == 'b') {
    unit.remove_suffix(2);
  } else if (unit.size() == 2 && to_lower(unit[1]) == 'b') {
    unit.remove_suffix(1);
  }
  unsigned shift = 0;
  if (unit.empty() || iequals(unit, "b")) {
    shift = 0;
  } else if (iequals(unit, "k")) {
    shift = 10;
  } else if (iequals(unit, "m")) {
    shift = 20;
  } else if (iequals(unit, "g")) {
    shift = 30;
  } else if (iequals(unit, "t")) {
    shift = 40;
  } else {
    return std::nullopt;
  }
  if (shift != 0 && *n > (std::numeric_limits<uint64_t>::max() >> shift)) return std::nullopt;
  return *n << shift;
}

std::optional<bool> parse_bool(std::string_view s) {
  s = trim(s);
  for (const auto t : {"yes", "true", "on", "1"}) {
    if (iequals(s, t)) return true;
  }
  for (const auto f : {"no", "false", "off", "0"}) {
    if (iequals(s, f)) return false;
  }
  return std::nullopt;
}

std::string HostPort::str() const {
  const std::string p = std::to_string(port);
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + p;
  return host + ":" + p;
}

std::optional<HostPort> parse_host_port(std::string_view s, uint16_t default_port) {
  s = trim(s);
  HostPort hp;
  std::string_view port_text;
  bool has_port = false;
  if (!s.empty() && s.front() == '[') {
    const size_t close = s.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    const std::string_view host = s.substr(1, close - 1);
    if (!valid_ipv6(host)) return std::nullopt;
    hp.host.assign(host);
    const std::string_view rest = s.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      port_text = rest.substr(1);
      has_port = true;
    }
  } else {
    const size_t colon = s.find(':');
    // More than one colon: an IPv6 address, which needs brackets ("[::1]:80"),
    // since "::1:80" could be either an address or an address and a port.
    if (colon != std::string_view::npos && s.find(':', colon + 1) != std::string_view::npos) {
      return std::nullopt;
    }
    const std::string_view host = s.substr(0, colon);
    if (!valid_hostname(host)) return std::nullopt;
    hp.host.assign(host);
    if (colon != std::string_view::npos) {
      port_text = s.substr(colon + 1);
      has_port = true;
    }
  }
  if (has_port) {
    const auto p = parse_uint(port_text);
    if (!p || port_text.size() > 5 || *p < 1 || *p > 65535 || trim(port_text) != port_text) {
      return std::nullopt;
    }
    hp.port = static_cast<uint16_t>(*p);
  } else {
    hp.port = default_port;
  }
  return hp;
}

std::string where(const IniFile& file, const Entry& e, std::string_view what) {
  std::string out = file.path;
  if (e.line > 0) out += ":" + std::to_string(e.line);
  out += ": [" + e.section + "] " + e.key + ": ";
  out.append(what);
  return out;
}

}  // namespace cdn::config
