// ResponseParser over arbitrary bytes, fed whole and in two pieces, then the
// connection is closed (finish()): both schedules must agree on status,
// headers and body, and every result must respect the parser's contract.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/http/parser.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace {

using cdn::http::Limits;
using cdn::http::ParseResult;
using cdn::http::ParseStatus;
using cdn::http::ResponseParser;

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
      out += "E\n";
      return out;
    }
    ++messages;
    const auto& resp = p.response();
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
