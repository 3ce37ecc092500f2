// SPDX-License-Identifier: MIT
// RequestParser over arbitrary bytes: one stream of pipelined requests is fed
// whole, in two pieces and (when short) byte by byte; all three must yield the
// same requests and fail at the same message, and every result must respect the
// parser's contract (consumed <= fed; NeedMore consumes everything). A chunked
// body must end where, and fail exactly when, ChunkedReference (a separate,
// plain reading of the grammar) says; a target must be of an accepted form.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/http/parser.hpp"
#include "common/http/path.hpp"
#include "tests/fuzz/chunked_reference.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace {

using cdn::http::Limits;
using cdn::http::ParseResult;
using cdn::http::ParseStatus;
using cdn::http::RequestParser;

// What the reference says of the chunked body of the message that starts at
// `start` (its head already accepted by the parser).
cdn::fuzz::ChunkedVerdict reference_body(std::string_view in, size_t start, const Limits& limits,
                                         size_t& body_at) {
  // The head scan refuses any bare CR or LF inside a head, so it ends at the
  // first CRLFCRLF after the empty lines the parser skips before it.
  while (start < in.size() && (in[start] == '\r' || in[start] == '\n')) ++start;
  const size_t end = in.find("\r\n\r\n", start);
  CDN_FUZZ_CHECK(end != std::string_view::npos);
  body_at = end + 4;
  return cdn::fuzz::ChunkedReference(in.substr(body_at), limits.max_body, limits.max_header_bytes)
      .read();
}

bool target_byte(unsigned char c) {
  return c > 0x20 && c < 0x7f && c != '"' && c != '<' && c != '>';
}

// Feeds `in` in chunks ending where `chunk_end(offset)` says (a read()
// schedule), resetting after each request as a connection does. Returns what
// the stream meant, for comparing schedules.
std::string transcript(std::string_view in, const Limits& limits,
                       const std::function<size_t(size_t)>& chunk_end) {
  RequestParser p(limits);
  std::string out;
  size_t offset = 0;  // absolute position of the next byte to feed
  size_t start = 0;   // where the current message begins
  size_t body_at = 0;
  for (size_t messages = 0; offset < in.size() && messages < 1000;) {
    const size_t end = std::clamp(chunk_end(offset), offset + 1, in.size());
    const std::string_view chunk = in.substr(offset, end - offset);
    const ParseResult r = p.feed(chunk);
    CDN_FUZZ_CHECK(r.consumed <= chunk.size());
    if (r.status == ParseStatus::NeedMore) {
      CDN_FUZZ_CHECK(r.consumed == chunk.size());
      CDN_FUZZ_CHECK(p.request().headers.size() <= limits.max_headers);
      offset = end;
      continue;
    }
    if (r.status == ParseStatus::Error) {
      CDN_FUZZ_CHECK(r.http_status == 400 || r.http_status == 413 || r.http_status == 414 ||
                     r.http_status == 431 || r.http_status == 501 || r.http_status == 505);
      CDN_FUZZ_CHECK(!r.reason.empty());
      if (p.headers_complete() && p.request().chunked) {
        // Refused inside a chunked body: the reference must refuse it too.
        const auto v = reference_body(in, start, limits, body_at);
        CDN_FUZZ_CHECK(v.kind == cdn::fuzz::ChunkedVerdict::Bad);
      }
      CDN_FUZZ_CHECK(p.feed("x").status == ParseStatus::Error);  // sticky until reset()
      // Only "an error" is compared: when input is both over a limit and
      // malformed, which is noticed first depends on where http-parser's
      // callbacks fall (414/431 vs 400); either way the connection ends.
      out += "E\n";
      return out;
    }
    offset += r.consumed;
    ++messages;
    const auto& req = p.request();
    if (req.chunked) {
      const auto v = reference_body(in, start, limits, body_at);
      CDN_FUZZ_CHECK(v.kind == cdn::fuzz::ChunkedVerdict::Ok && body_at + v.end == offset);
    }
    start = offset;
    for (char c : req.target) CDN_FUZZ_CHECK(target_byte(static_cast<unsigned char>(c)));
    CDN_FUZZ_CHECK(req.target.starts_with('/') || (req.target == "*" && req.method == "OPTIONS") ||
                   req.method == "CONNECT");
    CDN_FUZZ_CHECK(p.headers_complete());
    CDN_FUZZ_CHECK(req.method.size() + 1 + req.target.size() <= limits.max_request_line);
    CDN_FUZZ_CHECK(req.headers.size() <= limits.max_headers);
    CDN_FUZZ_CHECK(req.version_major == 1);
    CDN_FUZZ_CHECK(req.header("host").has_value() || req.version_minor == 0);
    out += "C@" + std::to_string(offset) + " " + req.method + " " + req.target + " " +
           std::to_string(req.version_minor) + (req.keep_alive ? " ka" : " close") + "\n";
    for (const auto& h : req.headers) {
      CDN_FUZZ_CHECK(req.header(h.name).has_value());
      CDN_FUZZ_CHECK(h.value.empty() || (h.value.front() != ' ' && h.value.back() != ' '));
      out += h.name + ":" + h.value + "\n";
    }
    (void)cdn::http::normalize_path(req.target);
    CDN_FUZZ_CHECK(p.feed("GET").status == ParseStatus::Error);  // no feed() without reset()
    p.reset();
  }
  if (offset >= in.size() && p.headers_complete() && p.request().chunked) {
    // Input ended inside a chunked body: the reference must see a valid prefix.
    const auto v = reference_body(in, start, limits, body_at);
    CDN_FUZZ_CHECK(v.kind == cdn::fuzz::ChunkedVerdict::Short);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = cdn::fuzz::as_view(data, size);
  const size_t split = cdn::fuzz::split_point(in);
  Limits limits;
  limits.max_body = 64 * 1024;  // as the daemons have it
  // Small limits half of the time, so the fuzzer reaches them cheaply.
  if (split % 2 == 1) {
    limits.max_request_line = 64;
    limits.max_header_bytes = 256;
    limits.max_headers = 8;
    limits.max_body = 32;
  }
  const std::string whole = transcript(in, limits, [&](size_t) { return in.size(); });
  // Two pieces: where a read() boundary falls must not matter.
  const std::string two =
      transcript(in, limits, [&](size_t off) { return off < split ? split : in.size(); });
  CDN_FUZZ_CHECK(whole == two);
  if (size <= 4096) {
    const std::string bytewise = transcript(in, limits, [](size_t off) { return off + 1; });
    CDN_FUZZ_CHECK(whole == bytewise);
  }
  return 0;
}
