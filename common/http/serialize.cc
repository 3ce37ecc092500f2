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

namespace {

int name_index(std::string_view s, const char* const* names, int n) {
  for (int i = 0; i < n; ++i) {
    if (iequals(s, names[i])) return i;
  }
  return -1;
}

constexpr const char* kLongDays[7] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                      "Thursday", "Friday", "Saturday"};

// "hh:mm:ss" at pos.
bool time_of_day(std::string_view s, size_t pos, int& hour, int& min, int& sec) {
  return s.size() >= pos + 8 && digits(s, pos, 2, hour) && s[pos + 2] == ':' &&
         digits(s, pos + 3, 2, min) && s[pos + 5] == ':' && digits(s, pos + 6, 2, sec);
}

int64_t to_unix(int wday, int day, int mon, int year, int hour, int min, int sec) {
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
  // Before the epoch is refused too: -1 is this API's "malformed".
  if (t < 0 || tm.tm_mday != day || tm.tm_mon != mon || tm.tm_wday != wday) return -1;
  return static_cast<int64_t>(t) + sec;
}

// "Sun, 06 Nov 1994 08:49:37 GMT": fixed length and positions.
int64_t imf_fixdate(std::string_view s) {
  if (s.size() != 29 || s.substr(3, 2) != ", " || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
      !iequals(s.substr(25), " GMT")) {
    return -1;
  }
  const int wday = name_index(s.substr(0, 3), kDays, 7);
  const int mon = name_index(s.substr(8, 3), kMonths, 12);
  int day = 0, year = 0, hour = 0, min = 0, sec = 0;
  if (wday < 0 || mon < 0 || !digits(s, 5, 2, day) || !digits(s, 12, 4, year) ||
      !time_of_day(s, 17, hour, min, sec)) {
    return -1;
  }
  return to_unix(wday, day, mon, year, hour, min, sec);
}

// "Sunday, 06-Nov-94 08:49:37 GMT".
int64_t rfc850_date(std::string_view s, int now_year) {
  const size_t comma = s.find(',');
  if (comma == std::string_view::npos || s.size() != comma + 24) return -1;
  const int wday = name_index(s.substr(0, comma), kLongDays, 7);
  const std::string_view r = s.substr(comma);  // ", 06-Nov-94 08:49:37 GMT"
  int day = 0, yy = 0, hour = 0, min = 0, sec = 0;
  if (wday < 0 || r.substr(0, 2) != ", " || r[4] != '-' || r[8] != '-' || r[11] != ' ' ||
      !iequals(r.substr(20), " GMT") || !digits(r, 2, 2, day) || !digits(r, 9, 2, yy) ||
      !time_of_day(r, 12, hour, min, sec)) {
    return -1;
  }
  const int mon = name_index(r.substr(5, 3), kMonths, 12);
  if (mon < 0) return -1;
  // RFC 9110 §5.6.7: a year more than 50 years in the future is in the past.
  int year = now_year / 100 * 100 + yy;
  if (year > now_year + 50) year -= 100;
  return to_unix(wday, day, mon, year, hour, min, sec);
}

// "Sun Nov  6 08:49:37 1994": the day is space-padded.
int64_t asctime_date(std::string_view s) {
  if (s.size() != 24 || s[3] != ' ' || s[7] != ' ' || s[10] != ' ' || s[19] != ' ') return -1;
  const int wday = name_index(s.substr(0, 3), kDays, 7);
  const int mon = name_index(s.substr(4, 3), kMonths, 12);
  int day = 0, year = 0, hour = 0, min = 0, sec = 0;
  const bool day_ok = s[8] == ' ' ? digits(s, 9, 1, day) : digits(s, 8, 2, day);
  if (wday < 0 || mon < 0 || !day_ok || !time_of_day(s, 11, hour, min, sec) ||
      !digits(s, 20, 4, year)) {
    return -1;
  }
  return to_unix(wday, day, mon, year, hour, min, sec);
}

int year_of(int64_t t) {
  const time_t tt = static_cast<time_t>(t);
  struct tm tm {};
  if (gmtime_r(&tt, &tm) == nullptr) return 1970;
  return tm.tm_year + 1900;
}

}  // namespace

int64_t parse_http_date(std::string_view s, int64_t now) {
  if (s.size() == 29) return imf_fixdate(s);
  if (s.size() == 24) return asctime_date(s);
  return rfc850_date(s, year_of(now));
}

// 2019-07-01: RFC 850 years 00-69 land in 20xx, 70-99 in 19xx.
int64_t parse_http_date(std::string_view s) { return parse_http_date(s, 1561939200); }

}  // namespace cdn::http
