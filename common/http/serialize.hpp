// SPDX-License-Identifier: MIT
// Building HTTP/1.1 message heads into a caller-owned buffer (reused per
// connection, so no allocation per response at steady state).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cdn::http {

class HeadWriter {
 public:
  explicit HeadWriter(std::string& out) : out_(out) {}
  // "HTTP/1.1 200 OK\r\n"
  HeadWriter& status_line(int status);
  // "GET /path HTTP/1.1\r\n"
  HeadWriter& request_line(std::string_view method, std::string_view target);
  // Rejects (skips, returns false through ok()) names/values with CR, LF or NUL.
  HeadWriter& header(std::string_view name, std::string_view value);
  HeadWriter& header(std::string_view name, uint64_t value);
  // Header lines ("Name: value\r\n"...) built earlier by a HeadWriter, e.g.
  // the ones every response repeats: copied as they are, not checked again.
  HeadWriter& prebuilt(std::string_view lines) {
    out_.append(lines);
    return *this;
  }
  // Terminating empty line.
  HeadWriter& end();
  bool ok() const { return ok_; }

 private:
  std::string& out_;
  bool ok_ = true;
};

// RFC 9110 IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
std::string http_date(int64_t unix_seconds);
// RFC 9110 §5.6.7 HTTP-date (from 1970 on): the IMF-fixdate, and the obsolete RFC 850
// ("Sunday, 06-Nov-94 08:49:37 GMT") and asctime ("Sun Nov  6 08:49:37 1994")
// forms a recipient must accept. Names and "GMT" match in any case; the
// weekday must match the date. `now` places RFC 850's two-digit year: one
// more than 50 years ahead of `now` is in the century before. -1 when
// malformed (other zones, two-digit years elsewhere, extra spaces, ...).
int64_t parse_http_date(std::string_view s, int64_t now);
// The same with RFC 850 years 00-69 taken as 20xx (no clock at hand).
int64_t parse_http_date(std::string_view s);

}  // namespace cdn::http
