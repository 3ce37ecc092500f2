// SPDX-License-Identifier: MIT
// ResponseParser over arbitrary bytes, fed whole and in two pieces, then the
// connection is closed (finish()): both schedules must agree on status,
// headers and body, and every result must respect the parser's contract. A
// chunked body must end where, and fail exactly when, ChunkedReference says.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/http/parser.hpp"
#include "tests/fuzz/chunked_reference.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace {

using cdn::http::Limits;
using cdn::http::ParseResult;
using cdn::http::ParseStatus;
using cdn::http::ResponseParser;

// Where the head of the response starting at `start` ends (the byte after
// which a fresh parser fed byte by byte first reports its final head; heads
// of 1xx responses before it are skipped), or npos if it never does.
size_t head_end(std::string_view in, size_t start, const Limits& limits, bool head) {
  ResponseParser p(limits);
  p.expect_no_body(head);
  for (size_t i = start; i < in.size(); ++i) {
    if (p.feed(in.substr(i, 1)).status == ParseStatus::Error) return std::string_view::npos;
    if (p.headers_complete()) return i + 1;
  }
  return std::string_view::npos;
}

// What the reference says of the chunked body of the response at `start`.
cdn::fuzz::ChunkedVerdict reference_body(std::string_view in, size_t start, const Limits& limits,
                                         bool head, size_t& body_at) {
  body_at = head_end(in, start, limits, head);
  CDN_FUZZ_CHECK(body_at != std::string_view::npos);
  return cdn::fuzz::ChunkedReference(in.substr(body_at), UINT64_MAX, limits.max_header_bytes)
      .read();
}

std::string transcript(std::string_view in, bool head, size_t split) {
  Limits limits;
  limits.max_header_bytes = 1024;
  limits.max_headers = 16;
  ResponseParser p(limits);
  std::string body;
  p.expect_no_body(head);
  p.set_body_sink([&body](std::string_view piece) { body.append(piece); });
  std::string out;
  size_t offset = 0;
  size_t start = 0;  // where the current response begins
  size_t body_at = 0;
  // A chunked body read by the decoder (not after HEAD, 1xx, 204, 304).
  auto chunked_body = [&] {
    const auto& resp = p.response();
    return p.headers_complete() && resp.chunked && !head && resp.status >= 200 &&
           resp.status != 204 && resp.status != 304;
  };
  for (size_t messages = 0; messages < 1000;) {
    ParseResult r;
    if (offset < in.size()) {
      const size_t end = offset < split ? split : in.size();
      const std::string_view chunk = in.substr(offset, end - offset);
      r = p.feed(chunk);
      CDN_FUZZ_CHECK(r.consumed <= chunk.size());
      if (r.status == ParseStatus::NeedMore) {
        CDN_FUZZ_CHECK(r.consumed == chunk.size());
        offset = end;
        continue;
      }
      offset += r.consumed;
    } else {
      r = p.finish();  // the peer closed
      if (r.status == ParseStatus::NeedMore) cdn::fuzz::violated("finish() returned NeedMore");
    }
    if (r.status == ParseStatus::Error) {
      CDN_FUZZ_CHECK(!r.reason.empty());
      if (chunked_body()) {
        // Refused inside the body (a bad byte), or closed inside it (finish()).
        const auto v = reference_body(in, start, limits, head, body_at);
        CDN_FUZZ_CHECK(v.kind == (offset < in.size() ? cdn::fuzz::ChunkedVerdict::Bad
                                                     : cdn::fuzz::ChunkedVerdict::Short));
      }
      out += "E\n";
      return out;
    }
    ++messages;
    const auto& resp = p.response();
    if (chunked_body()) {
      const auto v = reference_body(in, start, limits, head, body_at);
      CDN_FUZZ_CHECK(v.kind == cdn::fuzz::ChunkedVerdict::Ok && body_at + v.end == offset);
    }
    start = offset;
    CDN_FUZZ_CHECK(resp.status >= 100 && resp.status <= 999);
    CDN_FUZZ_CHECK(resp.headers.size() <= limits.max_headers);
    CDN_FUZZ_CHECK(p.body_bytes() == body.size());
    if (head || resp.status == 204 || resp.status == 304) CDN_FUZZ_CHECK(body.empty());
    if (resp.content_length && !head && !resp.chunked && resp.status >= 200 && resp.status != 204 &&
        resp.status != 304) {
      CDN_FUZZ_CHECK(body.size() == *resp.content_length);
    }
    out += "C " + std::to_string(resp.status) + " " + resp.reason + "\n";
    for (const auto& h : resp.headers) out += h.name + ":" + h.value + "\n";
    out += "body " + body + "\n";
    body.clear();
    if (offset >= in.size()) break;
    p.reset();
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = cdn::fuzz::as_view(data, size);
  const size_t split = cdn::fuzz::split_point(in);
  const bool head = split % 3 == 0;
  const std::string whole = transcript(in, head, in.size());
  const std::string two = transcript(in, head, split);
  CDN_FUZZ_CHECK(whole == two);
  return 0;
}
