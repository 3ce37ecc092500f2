// SPDX-License-Identifier: MIT
// Access log lines: one per answered request, in the "combined" format
// (Apache/nginx, what goaccess, awstats and most log tools read) or as one
// JSON object per line. Pure: the caller gives the record and the time,
// lines are appended to a buffer it owns.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cdn::access {

enum class Format { Combined, Json };
std::optional<Format> format_from_string(std::string_view s);

// One answered request, as the server saw it. The views are valid only for
// the call they are passed to (the connection's own buffers).
struct Record {
  std::string_view client;  // the peer's IP address, without port
  std::string_view method;  // empty when the request line did not parse
  std::string_view target;
  int version_major = 1, version_minor = 1;
  int status = 0;
  uint64_t bytes = 0;                     // body bytes sent (0 for HEAD, 304)
  std::chrono::microseconds duration{0};  // request head parsed -> answer handed to the kernel
  std::string_view referer, user_agent;
  std::string_view cache;     // the answer's Cache-Status, or a word (HIT, MISS, LOCAL)
  std::string_view site;      // the site the request was for
  std::string_view upstream;  // balancer: the replica it sent the client to
};

// The moment of the line in the server's time zone: seconds since the epoch,
// microseconds into the second, and the zone's offset east of UTC.
struct Time {
  int64_t unix_seconds = 0;
  uint32_t micros = 0;
  int32_t utc_offset_seconds = 0;
};

// combined: client - - [06/Dec/2026:16:04:46 +0000] "GET /a HTTP/1.1" 200 5 "ref" "ua"
// followed by what the combined format has no field for, as key="value"
// pairs log tools skip: rt="0.000123" cache="..." site="..." [upstream="..."].
// Quoted fields escape '"', '\\' and bytes outside printable ASCII as \xHH
// (nginx's escaping), so one request is always one line; an empty field is "-".
void append_combined(std::string& out, const Record& r, const Time& t);
// json: {"time":"2026-12-06T16:04:46.123456+00:00","client":...,"duration":0.000123,...}
// Bytes outside printable ASCII are written \u00XX (read as Latin-1), so a
// line is valid JSON whatever the client sent.
void append_json(std::string& out, const Record& r, const Time& t);
void append(std::string& out, Format f, const Record& r, const Time& t);

}  // namespace cdn::access
