// SPDX-License-Identifier: MIT
#include "common/http/serialize.hpp"

#include <charconv>
#include <cstring>
#include <ctime>

#include "common/http/message.hpp"

namespace cdn::http {

namespace {

constexpr const char* kDays[7] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr const char* kMonths[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

bool has_ctl_break(std::string_view s) {
  // Three SIMD scans (glibc's memchr) beat one byte loop for all but the
  // shortest values, and a Location or a fallback list is not short.
  return std::memchr(s.data(), '\r', s.size()) != nullptr ||
         std::memchr(s.data(), '\n', s.size()) != nullptr ||
         std::memchr(s.data(), '\0', s.size()) != nullptr;
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (!is_token_char(c)) return false;
  }
  return true;
}

void append_uint(std::string& out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;  // 24 bytes always hold a uint64_t
  out.append(buf, end);
}

void append_2digits(std::string& out, int v) {
  out.push_back(static_cast<char>('0' + v / 10));
  out.push_back(static_cast<char>('0' + v % 10));
}

// Parses exactly `n` decimal digits.
bool digits(std::string_view s, size_t pos, size_t n, int& out) {
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    const char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  return true;
}

}  // namespace

HeadWriter& HeadWriter::status_line(int status) {
  if (status < 100 || status > 999) {
    ok_ = false;
    return *this;
  }
  // "HTTP/1.1 ddd " written whole: one append instead of four.
  char line[13] = {'H', 'T', 'T', 'P', '/', '1', '.', '1', ' '};
  line[9] = static_cast<char>('0' + status / 100);
  line[10] = static_cast<char>('0' + status / 10 % 10);
  line[11] = static_cast<char>('0' + status % 10);
  line[12] = ' ';
  out_.append(line, sizeof line);
  out_.append(reason_phrase(status));
  out_.append("\r\n", 2);
  return *this;
}

HeadWriter& HeadWriter::request_line(std::string_view method, std::string_view target) {
  // A space in the target would split the request line for the receiver.
  if (!is_token(method) || target.empty() || has_ctl_break(target) ||
      target.find(' ') != std::string_view::npos) {
    ok_ = false;
    return *this;
  }
  out_.append(method);
  out_.push_back(' ');
  out_.append(target);
  out_.append(" HTTP/1.1\r\n");
  return *this;
}

HeadWriter& HeadWriter::header(std::string_view name, std::string_view value) {
  // CR/LF/NUL would let a value inject headers (response splitting); a name
  // that is not a token would be read differently by every peer.
  if (!is_token(name) || has_ctl_break(value)) {
    ok_ = false;
    return *this;
  }
  out_.append(name);
  out_.append(": ");
  out_.append(value);
  out_.append("\r\n");
  return *this;
}

HeadWriter& HeadWriter::header(std::string_view name, uint64_t value) {
  if (!is_token(name)) {
    ok_ = false;
    return *this;
  }
  out_.append(name);
  out_.append(": ");
  append_uint(out_, value);
  out_.append("\r\n");
  return *this;
}

HeadWriter& HeadWriter::end() {
  out_.append("\r\n");
  return *this;
}

std::string http_date(int64_t unix_seconds) {
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  if (gmtime_r(&t, &tm) == nullptr || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999) {
    return {};
  }
  // Built by hand: strftime's %a/%b follow the locale.
  std::string out;
  out.reserve(29);
  out.append(kDays[tm.tm_wday]);
  out.append(", ");
  append_2digits(out, tm.tm_mday);
  out.push_back(' ');
  out.append(kMonths[tm.tm_mon]);
  out.push_back(' ');
  const int year = tm.tm_year + 1900;
  append_2digits(out, year / 100);
  append_2digits(out, year % 100);
  out.push_back(' ');
  append_2digits(out, tm.tm_hour);
  out.push_back(':');
  append_2digits(out, tm.tm_min);
  out.push_back(':');
  append_2digits(out, tm.tm_sec);
  out.append(" GMT");
  return out;
}

int64_t parse_http_date(std::string_view s) {
  // "Sun, 06 Nov 1994 08:49:37 GMT": fixed length and positions.
  if (s.size() != 29) return -1;
  int wday = -1;
  for (int i = 0; i < 7; ++i) {
    if (s.substr(0, 3) == kDays[i]) wday = i;
  }
  if (wday < 0 || s.substr(3, 2) != ", " || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
      s[19] != ':' || s[22] != ':' || s.substr(25) != " GMT") {
    return -1;
  }
  int mon = -1;
  for (int i = 0; i < 12; ++i) {
    if (s.substr(8, 3) == kMonths[i]) mon = i;
  }
  int day = 0, year = 0, hour = 0, min = 0, sec = 0;
  if (mon < 0 || !digits(s, 5, 2, day) || !digits(s, 12, 4, year) || !digits(s, 17, 2, hour) ||
      !digits(s, 20, 2, min) || !digits(s, 23, 2, sec)) {
    return -1;
  }
  // 60 allows a leap second as RFC 5322 does (it counts into the next minute).
  if (day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60) return -1;
  struct tm tm {};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  const time_t t = timegm(&tm);
  // timegm normalises "31 Feb" into March: reject dates that moved, and a
  // weekday that does not match the date.
  if (t == static_cast<time_t>(-1) || tm.tm_mday != day || tm.tm_mon != mon || tm.tm_wday != wday) {
    return -1;
  }
  return static_cast<int64_t>(t) + sec;
}

}  // namespace cdn::http
