// SPDX-License-Identifier: MIT
#include "common/net/h2_link.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <utility>

#include "common/net/address.hpp"
#include "common/net/open_file.hpp"
#include "common/uv/handle.hpp"

namespace cdn::net {

namespace {

http2::SessionOptions session_options(const ServerOptions& o) {
  http2::SessionOptions s;
  s.limits = o.limits;
  s.header_timeout = o.header_timeout;
  s.idle_timeout = o.idle_timeout;
  s.send_timeout = o.send_timeout;
  return s;
}
}  // namespace

// One request's exchange (see h2_link.hpp). Its calls go to the session by
// stream id, so a call after the stream closed changes nothing.
class H2Link::Stream final : public ExchangeImpl {
 public:
  Stream(H2Link& link, int32_t id, const http::Request& req)
      : link_(link), id_(id), req_(req), ex_(link.conn_, this), start_ns_(uv_hrtime()) {}

  Exchange& exchange() { return ex_; }
  int32_t id() const { return id_; }

  const http::Request& request() const override { return req_; }
  bool is_head() const override { return req_.method == "HEAD"; }
  void note_cache(std::string_view s) override { cache_.assign(s); }
  void note_upstream(std::string_view s) override { upstream_.assign(s); }

  http::HeadWriter& begin(int status, bool relayed) override {
    head_.clear();
    if (begun_ || done_) {
      // Not the time for a head: the caller's headers go nowhere.
      scratch_.clear();
      return scratch_writer_.emplace(scratch_);
    }
    begun_ = true;
    status_ = status;
    on_gone_ = nullptr;
    auto& w = writer_.emplace(head_);
    if (!relayed) w.prebuilt(link_.server_.common_headers());
    return w;
  }

  void interim(int status, const std::vector<http::Header>& headers) override {
    if (begun_ || done_) return;
    std::string lines;
    http::HeadWriter w(lines);
    for (const auto& h : headers) w.header(h.name, h.value);
    if (link_.session_.interim(id_, status, lines)) link_.kick();
  }

  void finish(std::string_view body, std::shared_ptr<const void> owner) override {
    if (!begun_ || done_) return;
    complete();
    body_ = is_head() ? 0 : body.size();
    link_.session_.respond(id_, status_, head_, body, std::move(owner), is_head());
    link_.kick();
  }

  void finish_file(int fd, uint64_t offset, uint64_t length,
                   std::shared_ptr<const void> also) override {
    auto owner = std::make_shared<OpenFile>(fd, std::move(also));
    if (!begun_ || done_) return;
    if (is_head() || length == 0) {
      finish({}, nullptr);
      return;
    }
    complete();
    body_ = length;
    link_.session_.respond_file(id_, status_, head_, http2::FileRange{fd, offset, length, owner});
    link_.kick();
  }

  Deferred defer(std::function<void()> on_gone) override {
    deferred_ = true;
    on_gone_ = std::move(on_gone);
    if (!self_) self_ = std::make_shared<Exchange*>(&ex_);
    return Deferred(std::weak_ptr<Exchange*>(self_));
  }

  void start_stream(bool /*chunked: HTTP/2 frames the body itself*/) override {
    if (!begun_ || done_ || !deferred_) return;
    if (is_head()) {
      finish({}, nullptr);
      return;
    }
    streaming_ = link_.session_.respond_stream(id_, status_, head_);
    link_.kick();
  }

  bool send_piece(std::string_view piece) override {
    if (!streaming_ || !link_.session_.push_piece(id_, piece)) return false;
    body_ += piece.size();
    link_.kick();
    return true;
  }

  bool send_file_piece(int fd, uint64_t offset, uint64_t length,
                       std::shared_ptr<const void> owner) override {
    if (!streaming_ ||
        !link_.session_.push_file(id_, http2::FileRange{fd, offset, length, std::move(owner)})) {
      return false;
    }
    body_ += length;
    link_.kick();
    return true;
  }

  void end_stream() override {
    if (!streaming_) return;
    streaming_ = false;
    complete();
    link_.session_.end_body(id_);
    link_.kick();
  }

  bool streaming() const override { return streaming_; }
  bool stream_ready() const override { return streaming_ && link_.session_.stream_ready(id_); }
  void when_writable(std::function<void()> fn) override {
    writable_ = std::move(fn);
    link_.kick();
  }
  void cut_stream() override {
    if (!streaming_) return;
    streaming_ = false;
    complete();
    link_.session_.reset(id_);
    link_.kick();
  }

  // The handler returned: an answer neither given nor promised is a 500.
  void after_handler(bool threw) {
    if (done_ || (deferred_ && !threw)) return;
    if (!threw) {
      spdlog::error("{} {} {}: handler gave no answer", ex_.peer(), req_.method, req_.target);
    }
    if (streaming_) {
      cut_stream();
      return;
    }
    begun_ = false;
    ex_.reply(500, "Internal Server Error");
  }

  // Called when the writable callback should run (the stream can take a piece).
  void writable() {
    if (!writable_ || !stream_ready()) return;
    auto fn = std::exchange(writable_, nullptr);
    fn();
  }

  // The session closed the stream: the access log hears of the answer, a
  // promise not yet begun hears the client left.
  void closed(bool whole, uint64_t body_bytes) {
    if (self_) *self_ = nullptr;
    writable_ = nullptr;
    if (on_gone_ && !begun_) {
      auto gone = std::exchange(on_gone_, nullptr);
      uv::guarded("gone", [&] { gone(); });
    }
    if (!begun_) return;
    const auto& cb = link_.server_.options_.on_complete;
    if (!cb) return;
    const sockaddr* addr = ex_.peer_address();
    std::string ip = "-";
    if (addr != nullptr) {
      sockaddr_storage ss{};
      std::memcpy(&ss, addr,
                  addr->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
      ip = ip_of(ss);
    }
    cb(RequestRecord{
        .request = req_,
        .peer = addr,
        .client = ip,
        .status = status_,
        .body_bytes = whole ? body_ : std::min(body_, body_bytes),
        .duration = std::chrono::microseconds((uv_hrtime() - start_ns_) / 1000),
        .cache = cache_,
        .upstream = upstream_,
        .whole = whole,
    });
  }

 private:
  // The answer is given whole (the body may still be on its way): a
  // Deferred no longer reaches it.
  void complete() {
    done_ = true;
    if (self_) *self_ = nullptr;
  }

  H2Link& link_;
  int32_t id_;
  const http::Request& req_;  // the session's, until the stream closes
  Exchange ex_;
  uint64_t start_ns_;
  std::shared_ptr<Exchange*> self_;  // Deferred holds it weakly
  std::string head_;
  std::optional<http::HeadWriter> writer_;
  std::string scratch_;
  std::optional<http::HeadWriter> scratch_writer_;
  std::string cache_;
  std::string upstream_;
  std::function<void()> on_gone_;
  std::function<void()> writable_;
  int status_ = 0;
  uint64_t body_ = 0;
  bool begun_ = false;
  bool done_ = false;
  bool deferred_ = false;
  bool streaming_ = false;
};

H2Link::H2Link(Server& server, Connection& conn, std::function<void()> kick, uint64_t now)
    : server_(server),
      conn_(conn),
      kick_(std::move(kick)),
      session_(*this, session_options(server.options_), now) {
  ++server_.stats_.h2_connections_total;
}

H2Link::~H2Link() { session_.abort(); }

void H2Link::on_request(int32_t id, const http::Request& req) {
  ++server_.stats_.h2_streams_total;
  ++server_.conn_stats_.requests_total;
  auto [it, fresh] = streams_.emplace(id, std::make_unique<Stream>(*this, id, req));
  if (!fresh) return;
  Stream& s = *it->second;
  bool threw = false;
  try {
    server_.handler_(s.exchange());
  } catch (const std::exception& e) {
    spdlog::error("{} {} {}: handler failed: {}", s.exchange().peer(), req.method, req.target,
                  e.what());
    threw = true;
  }
  // The stream may have closed from inside the handler (a reset it caused).
  auto again = streams_.find(id);
  if (again != streams_.end()) again->second->after_handler(threw);
}

void H2Link::on_stream_closed(int32_t id, bool whole, uint64_t body_bytes) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  std::unique_ptr<Stream> s = std::move(it->second);
  streams_.erase(it);
  if (!whole) ++server_.stats_.h2_resets_total;
  s->closed(whole, body_bytes);
}

void H2Link::on_stream_writable(int32_t id) {
  auto it = streams_.find(id);
  if (it != streams_.end()) it->second->writable();
}

void H2Link::notify_writable() {
  std::vector<int32_t> ids;
  for (const auto& [id, s] : streams_) {
    if (s->stream_ready()) ids.push_back(id);
  }
  for (const int32_t id : ids) on_stream_writable(id);
}

void H2Link::flush(Transport& t, unsigned rounds) {
  want_more_ = false;
  const uint64_t now = uv_now(server_.loop_);
  while (!session_.writing() && !session_.closed()) {
    if (rounds-- == 0) {
      want_more_ = true;
      return;
    }
    std::string out = session_.take_output(now);
    if (out.empty()) return;
    const std::string_view buf[] = {out};
    const Handed h = t.write(buf, {});
    if (h.error != 0) {
      SPDLOG_DEBUG("h2 write failed: {}", uv_strerror(h.error));
      session_.abort();
      return;
    }
    server_.conn_stats_.bytes_sent += h.now;
    if (h.queued > 0) {
      queued_ = h.queued;
      out_ = std::move(out);  // the unit's bytes stay put until write_done()
      return;
    }
    session_.output_done(std::move(out), now);
  }
}

void H2Link::write_done(uint64_t now) {
  server_.conn_stats_.bytes_sent += std::exchange(queued_, 0);
  session_.output_done(std::move(out_), now);
  out_ = std::string();
}

}  // namespace cdn::net
