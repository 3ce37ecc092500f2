// SPDX-License-Identifier: MIT
#include "common/access/format.hpp"

#include <fmt/format.h>

#include <cstdlib>

namespace cdn::access {

namespace {

constexpr char kHex[] = "0123456789ABCDEF";
constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

struct Civil {
  int64_t year;
  unsigned month, day, hour, minute, second;
};

// Howard Hinnant's days_from_civil inverse: no libc time zone call, so the
// formatting stays pure and works for any offset given.
Civil civil_of(int64_t t) {
  int64_t days = t / 86400;
  int64_t secs = t % 86400;
  if (secs < 0) {
    secs += 86400;
    --days;
  }
  days += 719468;
  const int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const auto doe = static_cast<unsigned>(days - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  const int64_t y = static_cast<int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0);
  return {y,
          m,
          d,
          static_cast<unsigned>(secs / 3600),
          static_cast<unsigned>(secs / 60 % 60),
          static_cast<unsigned>(secs % 60)};
}

void append_offset(std::string& out, int32_t offset, bool colon) {
  const char sign = offset < 0 ? '-' : '+';
  const int32_t a = std::abs(offset);
  fmt::format_to(std::back_inserter(out), "{}{:02}{}{:02}", sign, a / 3600, colon ? ":" : "",
                 a / 60 % 60);
}

bool printable(unsigned char c) { return c >= 0x20 && c < 0x7f; }

// nginx's escaping of quoted access log fields.
void append_escaped(std::string& out, std::string_view s) {
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (printable(c) && c != '"' && c != '\\') {
      out.push_back(ch);
    } else {
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
}

void append_quoted(std::string& out, std::string_view s) {
  out.push_back('"');
  if (s.empty()) out.push_back('-');
  append_escaped(out, s);
  out.push_back('"');
}

void append_json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (printable(c)) {
      out.push_back(ch);
    } else {
      out += "\\u00";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  out.push_back('"');
}

void append_token(std::string& out, std::string_view s) {
  // Client, method and site come from the parser or our settings, never
  // with a blank or a quote; still, a log line must not be splittable.
  if (s.empty()) {
    out.push_back('-');
    return;
  }
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    out.push_back(printable(c) && c != ' ' && c != '"' ? ch : '?');
  }
}

}  // namespace

std::optional<Format> format_from_string(std::string_view s) {
  if (s == "combined") return Format::Combined;
  if (s == "json") return Format::Json;
  return std::nullopt;
}

void append_combined(std::string& out, const Record& r, const Time& t) {
  const Civil c = civil_of(t.unix_seconds + t.utc_offset_seconds);
  append_token(out, r.client);
  fmt::format_to(std::back_inserter(out), " - - [{:02}/{}/{:04}:{:02}:{:02}:{:02} ", c.day,
                 kMonths[c.month - 1], c.year, c.hour, c.minute, c.second);
  append_offset(out, t.utc_offset_seconds, false);
  out += "] \"";
  if (r.method.empty()) {
    // A request whose line did not parse: nginx logs it as "-" too.
    out.push_back('-');
  } else {
    append_token(out, r.method);
    out.push_back(' ');
    // The parser refuses targets with blanks, quotes and non-ASCII; escaped
    // anyway.
    append_escaped(out, r.target);
    fmt::format_to(std::back_inserter(out), " HTTP/{}.{}", r.version_major, r.version_minor);
  }
  fmt::format_to(std::back_inserter(out), "\" {} {} ", r.status, r.bytes);
  append_quoted(out, r.referer);
  out.push_back(' ');
  append_quoted(out, r.user_agent);
  fmt::format_to(std::back_inserter(out), " rt=\"{}.{:06}\" cache=", r.duration.count() / 1'000'000,
                 r.duration.count() % 1'000'000);
  append_quoted(out, r.cache);
  out += " site=";
  append_quoted(out, r.site);
  if (!r.upstream.empty()) {
    out += " upstream=";
    append_quoted(out, r.upstream);
  }
  out.push_back('\n');
}

void append_json(std::string& out, const Record& r, const Time& t) {
  const Civil c = civil_of(t.unix_seconds + t.utc_offset_seconds);
  fmt::format_to(std::back_inserter(out), "{{\"time\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
                 c.year, c.month, c.day, c.hour, c.minute, c.second, t.micros);
  append_offset(out, t.utc_offset_seconds, true);
  out += "\",\"client\":";
  append_json_string(out, r.client);
  out += ",\"method\":";
  append_json_string(out, r.method);
  out += ",\"target\":";
  append_json_string(out, r.target);
  fmt::format_to(std::back_inserter(out),
                 ",\"protocol\":\"HTTP/{}.{}\",\"status\":{},\"bytes\":{},\"duration\":{}.{:06}",
                 r.version_major, r.version_minor, r.status, r.bytes,
                 r.duration.count() / 1'000'000, r.duration.count() % 1'000'000);
  out += ",\"referer\":";
  append_json_string(out, r.referer);
  out += ",\"user_agent\":";
  append_json_string(out, r.user_agent);
  out += ",\"cache\":";
  append_json_string(out, r.cache);
  out += ",\"site\":";
  append_json_string(out, r.site);
  if (!r.upstream.empty()) {
    out += ",\"upstream\":";
    append_json_string(out, r.upstream);
  }
  out += "}\n";
}

void append(std::string& out, Format f, const Record& r, const Time& t) {
  if (f == Format::Json) {
    append_json(out, r, t);
  } else {
    append_combined(out, r, t);
  }
}

}  // namespace cdn::access
