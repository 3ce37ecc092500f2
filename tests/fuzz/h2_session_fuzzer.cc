// SPDX-License-Identifier: MIT
// http2::Session over arbitrary client bytes: fed whole, in two pieces and
// (when short) byte by byte, with the output taken after every piece; all
// schedules must hand the handler the same requests, every request must be
// answered (bytes, HEAD, file bodies read in bounded chunks), and the session
// must hold its bounds (streams, output per take). Seeds start with the
// client preface.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/http2/session.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace {

using cdn::http2::Session;
using cdn::http2::SessionOptions;

class Handler : public cdn::http2::SessionHandler {
 public:
  void on_request(int32_t id, const cdn::http::Request& req) override {
    transcript += std::to_string(id) + " " + req.method + " " + req.target + " " +
                  std::to_string(req.body.size()) + "\n";
    ++open;
    CDN_FUZZ_CHECK(open <= 100);
    const std::string lines = "Content-Length: 4\r\n";
    switch (id % 4) {
      case 1:
        session->respond(id, 200, lines, "body", nullptr, req.method == "HEAD");
        break;
      case 3:
        session->respond_file(id, 200, "content-length: 40000\r\n",
                              cdn::http2::FileRange{7, 0, 40000, nullptr});
        break;
      default:  // left to answer later (deferred), or streamed
        if (session->respond_stream(id, 200, "")) {
          session->push_piece(id, "piece");
          session->end_body(id);
        }
        break;
    }
  }
  void on_stream_closed(int32_t, bool, uint64_t) override { --open; }
  Session* session = nullptr;
  std::string transcript;
  int open = 0;
};

std::string run(std::string_view in, const std::function<size_t(size_t)>& chunk_end) {
  Handler h;
  SessionOptions o;
  o.limits.max_body = 1024;
  o.read_file = [](int fd, uint64_t, uint8_t* buf, size_t n) -> long {
    CDN_FUZZ_CHECK(fd == 7);
    CDN_FUZZ_CHECK(n <= 16384);
    for (size_t i = 0; i < n; ++i) buf[i] = 'f';
    return static_cast<long>(n);
  };
  Session s(h, o, 1000);
  h.session = &s;
  for (size_t offset = 0; offset < in.size();) {
    const size_t end = std::min(std::max(chunk_end(offset), offset + 1), in.size());
    s.receive(in.substr(offset, end - offset), 1000);
    offset = end;
    for (int i = 0; i < 4; ++i) {
      std::string out = s.take_output(1000);
      CDN_FUZZ_CHECK(out.size() <= o.max_output + 16384 + 64);
      if (out.empty()) break;
      s.output_done(std::move(out), 1000);
    }
  }
  s.tick(1000 + 120'000);
  CDN_FUZZ_CHECK(s.open_streams() <= 100);
  return h.transcript;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = cdn::fuzz::as_view(data, size);
  const std::string whole = run(in, [&](size_t) { return in.size(); });
  const size_t cut = cdn::fuzz::split_point(in);
  const std::string two = run(in, [&](size_t off) { return off < cut ? cut : in.size(); });
  CDN_FUZZ_CHECK(whole == two);
  if (in.size() <= 4096) {
    const std::string bytes = run(in, [](size_t off) { return off + 1; });
    CDN_FUZZ_CHECK(whole == bytes);
  }
  return 0;
}
