// SPDX-License-Identifier: MIT
#include "common/net/server.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <optional>
#include <span>

#include "common/net/address.hpp"
#include "common/net/h2_link.hpp"
#include "common/net/open_file.hpp"
#include "common/net/tcp.hpp"

namespace cdn::net {

namespace {
constexpr std::string_view kRejectResponse =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
    "Connection: close\r\n\r\n";

}  // namespace

// The adapter of one accepted connection between its transport and its core
// (see server.hpp). Its own state is loop state only: the timer's due time,
// the ready list, what the access log is told; every protocol decision is
// the core's, and every socket call the transport's.
// A DeadlineHeap::Node: its deadline waits in the server's heap (see arm()).
class Connection final : public http::ConnectionHandler,
                         public TransportUser,
                         public DeadlineHeap::Node {
 public:
  Connection(Server& server, uint64_t now)
      : server_(server), core_(*this, server.conn_options_, now, &server.conn_stats_) {}
  ~Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Serves `fd`, a socket just accepted (taken, closed on failure), under
  // its listener's transport layer when it has one (TLS).
  bool start(int fd, const TransportLayer* layer);
  // Over the connection limit: a 503, then close.
  void reject();
  void drain();
  // Immediate close: nothing more is sent.
  void close();
  // From the server's ready list: the next share of pipelined requests.
  void resume();

  // http::ConnectionHandler
  void on_request(uint64_t seq, const http::Request& req) override;
  std::string_view common_headers() override { return server_.common_headers(); }
  void on_error_answer(int status) override;

  // TransportUser
  void on_open(int status) noexcept override;
  void on_read(std::string_view data) noexcept override;
  void on_eof() noexcept override;
  void on_error(int status) noexcept override;
  void on_write_done(int status) noexcept override;
  void on_writable() noexcept override;
  size_t read_budget() const noexcept override {
    if (h2_) return h2_->session().closed() ? 0 : kH2ReadBudget;
    return core_.read_budget();
  }
  // The transport let go of the core's bytes: the connection goes.
  void on_closed() noexcept override { delete this; }
  // Runs a callback's work; an exception closes this connection only.
  template <typename F>
  void guard(const char* where, F&& f) noexcept {
    if (uv::guarded(where, std::forward<F>(f))) return;
    busy_ = 0;
    close();
  }

  uint64_t now() const { return uv_now(server_.loop_); }
  // After anything changed the core from outside one of this connection's
  // own callbacks (a deferred answer): carry the change out now.
  void kick() {
    if (busy_ == 0) sync();
  }
  const std::string& peer();
  const sockaddr* peer_address();

  // For the access log (ServerOptions::on_complete). An answer is reported
  // once: when queued whole, or for a file or a stream, when its last byte
  // went out or the connection closed before that.
  enum class Open : uint8_t { None, Answer, File, Stream };
  void report(bool whole);
  void report_now(uint64_t body_bytes) {
    answering().answer_bytes = body_bytes;
    report(true);
  }

  Server& server_;
  http::ServerConnection core_;
  Transport::Ptr transport_;    // null once closed (it frees itself, then tells on_closed)
  Connection* prev_ = nullptr;  // the server's list of connections
  Connection* next_ = nullptr;
  Connection* ready_prev_ = nullptr;  // the server's ready list
  Connection* ready_next_ = nullptr;

  // The client's address, for logs: asked of the kernel (getpeername) the
  // first time it is needed, which without an access log or admin request is
  // never for most connections; so it is held apart (in Answering), from then on.
  struct Peer {
    sockaddr_storage addr{};
    std::string ip;
    std::string text;  // "ip:port"
  };

  // What answers use beyond the core: made with the connection's first
  // request (or answer of its own) and kept, so that a kept-alive connection
  // allocates nothing per request and one that never asks holds none of it.
  struct Answering {
    explicit Answering(Connection& c) : exchange(c) {}
    Exchange exchange;  // the handler's view of the request being answered
    // The answer being made, for report().
    Open open = Open::None;
    int answer_status = 0;
    uint64_t answer_bytes = 0;
    uint64_t request_start_ns = 0;
    uint64_t file_left = 0;  // file bytes of the answer not handed over yet
    uint64_t deferred = 0;   // the request whose answer was deferred
    // Deferred answers hold this weakly; it points at nothing once closed.
    std::shared_ptr<Connection*> self;
    std::unique_ptr<Peer> peer;  // see Peer
    std::unique_ptr<http::Request>
        file_req;  // its request (the core moved on); with on_complete only
    std::string note_cache;
    std::string note_upstream;
    std::function<void()> writable;  // Exchange::when_writable
    std::string scratch;             // reply() bodies; begin() heads refused by the core
    std::optional<http::HeadWriter> scratch_writer;
    // Exchange::defer(on_gone): run when the connection closes before the
    // deferred answer has begun; its client's EOF closes the connection.
    std::function<void()> on_gone;
  };
  std::unique_ptr<Answering> answering_;
  Answering& answering() {
    if (!answering_) answering_ = std::make_unique<Answering>(*this);
    return *answering_;
  }

  // HTTP/2: the link once the connection speaks it (ALPN h2, or the client
  // preface on a plain port); the connection then forwards its transport's
  // events to it. `preface_`: how many of a plain connection's first bytes
  // were the preface's, while they may still be it (they wait here).
  static constexpr size_t kH2ReadBudget = 64 * 1024;
  static constexpr unsigned kH2RoundsPerTurn = 8;
  std::unique_ptr<H2Link> h2_;

  // Small fields together: an idle connection is mostly this object.
  uint8_t busy_ = 0;     // inside sync() (or a callback that ends with one): nesting depth
  bool opened_ = false;  // the transport carries bytes (a TLS one: handshake done)
  bool closing_ = false;
  bool yielded_ = false;  // in the server's ready list
  bool backlogged_ = false;
  bool secure_ = false;    // accepted under a listener's transport layer (TLS)
  bool sniffing_ = false;  // a plain connection whose first bytes are not read yet
  uint8_t preface_ = 0;
  void start_h2();
  void h2_sync();

  // Carries out what the core asks for: output, reading, resuming, the timer, the close.
  void sync();
  void flush();
  void file_sent(uint64_t n);
  void arm();
  void on_timer();
  void backlog(bool on);
  void close_transport();
};

// ---------------------------------------------------------------- Exchange

const http::Request& Exchange::request() const {
  return impl_ != nullptr ? impl_->request() : conn_.core_.request();
}
const std::string& Exchange::peer() const { return conn_.peer(); }
const sockaddr* Exchange::peer_address() const { return conn_.peer_address(); }
void Exchange::note_cache(std::string_view status) {
  if (impl_ != nullptr) return impl_->note_cache(status);
  conn_.answering().note_cache.assign(status);
}
void Exchange::note_upstream(std::string_view upstream) {
  if (impl_ != nullptr) return impl_->note_upstream(upstream);
  conn_.answering().note_upstream.assign(upstream);
}
bool Exchange::is_head() const {
  return impl_ != nullptr ? impl_->is_head() : conn_.core_.is_head();
}
// An HTTP/2 stream's connection is the one that took the TLS handshake (or
// the h2c preface), so it answers for the stream too.
bool Exchange::secure() const { return conn_.secure_; }

void Exchange::interim(int status, const std::vector<http::Header>& headers) {
  if (impl_ != nullptr) return impl_->interim(status, headers);
  Connection& c = conn_;
  if (c.core_.interim(c.core_.seq(), status, headers)) c.kick();
}

http::HeadWriter& Exchange::begin(int status, bool relayed) {
  if (impl_ != nullptr) return impl_->begin(status, relayed);
  Connection& c = conn_;
  Connection::Answering& a = c.answering();
  if (http::HeadWriter* h = c.core_.begin(c.core_.seq(), status, relayed)) {
    a.on_gone = nullptr;  // answered: the client is not abandoned any more
    a.answer_status = status;
    a.open = Connection::Open::Answer;
    return *h;
  }
  // Not the time for a head (answered already, or the connection closed):
  // the caller's headers go nowhere, and its finish*() is refused.
  a.scratch.clear();
  return a.scratch_writer.emplace(a.scratch);
}

void Exchange::finish(std::string_view body, std::shared_ptr<const void> owner) {
  if (impl_ != nullptr) return impl_->finish(body, std::move(owner));
  Connection& c = conn_;
  const uint64_t seq = c.core_.seq();
  if (!c.core_.is_current(seq) || c.core_.state() != http::ServerConnection::State::Answering) {
    return;
  }
  // Reported first: the core forgets the request once the answer is queued.
  c.report_now(is_head() ? 0 : body.size());
  c.core_.finish(seq, body, std::move(owner));
  c.kick();
}

void Exchange::finish_file(int fd, uint64_t offset, uint64_t length,
                           std::shared_ptr<const void> owner) {
  if (impl_ != nullptr) return impl_->finish_file(fd, offset, length, std::move(owner));
  Connection& c = conn_;
  const uint64_t seq = c.core_.seq();
  if (!c.core_.is_current(seq) || c.core_.state() != http::ServerConnection::State::Answering) {
    ::close(fd);
    return;
  }
  if (is_head() || length == 0) {
    ::close(fd);
    finish();
    return;
  }
  Connection::Answering& a = c.answering();
  a.open = Connection::Open::File;
  a.answer_bytes = length;  // less what is left unsent if the connection closes first
  a.file_left = length;
  if (c.server_.options_.on_complete)
    a.file_req = std::make_unique<http::Request>(c.core_.request());
  c.core_.finish_file(
      seq, http::FileRange{fd, offset, length, std::make_shared<OpenFile>(fd, std::move(owner))});
  c.kick();
}

Deferred Exchange::defer() {
  if (impl_ != nullptr) return impl_->defer(nullptr);
  Connection& c = conn_;
  Connection::Answering& a = c.answering();
  a.deferred = c.core_.seq();
  if (!a.self) a.self = std::make_shared<Connection*>(&c);
  return Deferred(a.self, c.core_.seq());
}

Deferred Exchange::defer(std::function<void()> on_gone) {
  if (impl_ != nullptr) return impl_->defer(std::move(on_gone));
  Deferred d = defer();
  conn_.answering().on_gone = std::move(on_gone);
  return d;
}

void Exchange::start_stream(bool chunked) {
  if (impl_ != nullptr) return impl_->start_stream(chunked);
  Connection& c = conn_;
  const uint64_t seq = c.core_.seq();
  if (c.answering().deferred != seq || !c.core_.is_current(seq) ||
      c.core_.state() != http::ServerConnection::State::Answering) {
    return;
  }
  c.answering().answer_bytes = 0;
  if (is_head()) {
    c.report(true);  // the head is the whole answer
    c.core_.start_stream(seq);
  } else if (c.core_.start_stream(seq, chunked)) {
    c.answering().open = Connection::Open::Stream;
  } else {
    // Chunked framing is HTTP/1.1's: an HTTP/1.0 client cannot be streamed to.
    c.answering().answer_status = 505;
    c.report(true);
    c.core_.fail(seq, 505);
  }
  c.kick();
}

bool Exchange::streaming() const {
  if (impl_ != nullptr) return impl_->streaming();
  return conn_.core_.state() == http::ServerConnection::State::Streaming;
}

bool Exchange::send_piece(std::string_view piece) {
  if (impl_ != nullptr) return impl_->send_piece(piece);
  Connection& c = conn_;
  if (!c.core_.send_piece(c.core_.seq(), piece)) return false;
  c.answering().answer_bytes += piece.size();
  c.kick();
  return !c.core_.closed();
}

bool Exchange::send_file_piece(int fd, uint64_t offset, uint64_t length,
                               std::shared_ptr<const void> owner) {
  if (impl_ != nullptr) return impl_->send_file_piece(fd, offset, length, std::move(owner));
  Connection& c = conn_;
  if (!c.core_.send_file_piece(c.core_.seq(),
                               http::FileRange{fd, offset, length, std::move(owner)})) {
    return false;
  }
  c.answering().answer_bytes += length;
  c.answering().file_left += length;  // less what is left unsent if the connection closes first
  c.kick();
  return !c.core_.closed();
}

bool Exchange::stream_ready() const {
  return impl_ != nullptr ? impl_->stream_ready() : conn_.core_.stream_ready();
}

void Exchange::when_writable(std::function<void()> fn) {
  if (impl_ != nullptr) return impl_->when_writable(std::move(fn));
  conn_.answering().writable = std::move(fn);
  conn_.kick();
}

void Exchange::cut_stream() {
  if (impl_ != nullptr) return impl_->cut_stream();
  Connection& c = conn_;
  if (!streaming()) return;
  c.core_.fail(c.core_.seq(), 502);
  c.kick();
}

void Exchange::end_stream() {
  if (impl_ != nullptr) return impl_->end_stream();
  Connection& c = conn_;
  if (!streaming()) return;
  c.report(true);
  c.core_.end_stream(c.core_.seq());
  c.kick();
}

Exchange* Deferred::exchange() const {
  if (auto s = stream_.lock()) return *s;
  auto p = conn_.lock();
  if (!p || *p == nullptr) return nullptr;
  Connection* c = *p;
  if (!c->answering_ || c->answering_->deferred != seq_ || !c->core_.is_current(seq_)) {
    return nullptr;
  }
  return &c->answering_->exchange;
}

void Exchange::reply(int status, std::string_view text,
                     std::initializer_list<std::pair<std::string_view, std::string_view>> headers) {
  auto& h = begin(status);
  h.header("Content-Type", "text/plain; charset=utf-8");
  for (const auto& [name, value] : headers) h.header(name, value);
  h.header("Content-Length", static_cast<uint64_t>(text.size() + 1));
  // The core copies a small body into the head's buffer: scratch is reused.
  std::string& body = conn_.answering().scratch;
  body.assign(text).push_back('\n');
  finish(body);
}

// -------------------------------------------------------------- Connection

bool Connection::start(int fd, const TransportLayer* layer) {
  // Freed (with this connection) in its close callback, after the write
  // callbacks: on_closed().
  transport_ = TcpTransport::adopt(server_.loop_, fd);
  if (transport_ && layer != nullptr) {
    transport_ = (*layer)(std::move(transport_));
    secure_ = true;
  }
  if (!transport_) return false;
  sniffing_ = layer == nullptr;
  transport_->bind(*this);
  if (transport_->open()) on_open(0);  // reads, and arms the header timeout
  return true;
}

void Connection::on_open(int status) noexcept {
  if (closing_) return;
  if (status < 0) {
    SPDLOG_DEBUG("transport failed to open: {}", uv_strerror(status));
    close();
    return;
  }
  opened_ = true;
  guard("open", [this] {
    if (transport_->h2()) start_h2();  // ALPN chose it
    sync();
  });
}

const sockaddr* Connection::peer_address() {
  // Once closed, no transport is asked: its socket's number may already
  // belong to another connection.
  if ((!answering_ || !answering_->peer) && transport_) {
    auto p = std::make_unique<Peer>();
    if (transport_->peer_address(p->addr)) {
      p->ip = ip_of(p->addr);
      answering().peer = std::move(p);
    }
  }
  return answering_ && answering_->peer ? reinterpret_cast<const sockaddr*>(&answering_->peer->addr)
                                        : nullptr;
}

const std::string& Connection::peer() {
  static const std::string kUnknown("?");
  if (peer_address() == nullptr) return kUnknown;
  Peer& p = *answering_->peer;
  if (p.text.empty()) p.text = Address{p.addr}.str();
  return p.text;
}

// The one place on_complete is called from.
void Connection::report(bool whole) {
  if (!answering_ || answering_->open == Open::None) return;
  Answering& a = *answering_;
  const Open open = std::exchange(a.open, Open::None);
  const auto& cb = server_.options_.on_complete;
  if (!cb) return;
  const uint64_t elapsed_ns = uv_hrtime() - a.request_start_ns;
  const sockaddr* addr = peer_address();
  const http::Request& req = open == Open::File && a.file_req ? *a.file_req : core_.request();
  cb(RequestRecord{
      .request = req,
      .peer = addr,
      .client = addr != nullptr ? std::string_view(a.peer->ip) : std::string_view("-"),
      .status = a.answer_status,
      .body_bytes = a.answer_bytes,
      .duration = std::chrono::microseconds(elapsed_ns / 1000),
      .cache = a.note_cache,
      .upstream = a.note_upstream,
      .whole = whole,
  });
  a.file_req.reset();
}

void Connection::on_request(uint64_t seq, const http::Request& req) {
  Answering& a = answering();
  a.request_start_ns = uv_hrtime();
  a.note_cache.clear();
  a.note_upstream.clear();
  a.open = Open::None;
  try {
    server_.handler_(a.exchange);
  } catch (const std::exception& e) {
    spdlog::error("{} {} {}: handler failed: {}", peer(), req.method, req.target, e.what());
    if (core_.is_current(seq) && core_.state() != http::ServerConnection::State::Streaming) {
      a.answer_status = 500;
      a.open = Open::Answer;
      report_now(0);
    }
    core_.fail(seq, 500);  // a begun head is dropped
    return;
  }
  if (!core_.is_current(seq) || a.deferred == seq) return;
  spdlog::error("{} {} {}: handler gave no answer", peer(), req.method, req.target);
  if (core_.state() != http::ServerConnection::State::Streaming) {
    a.answer_status = 500;
    a.open = Open::Answer;
    report_now(0);
  }
  core_.fail(seq, 500);
}

void Connection::on_error_answer(int status) {
  SPDLOG_DEBUG("{}: answered {} itself", peer(), status);
  Answering& a = answering();
  a.request_start_ns = uv_hrtime();
  a.note_cache.clear();
  a.note_upstream.clear();
  a.answer_status = status;
  a.open = Open::Answer;
  report_now(http::reason_phrase(status).size() + 1);
}

// After every event: output first (it may free room for answers), then the
// requests that wait (this turn's share), then reading and the timer.
void Connection::sync() {
  if (closing_) return;
  if (h2_ && opened_) {
    h2_sync();
    return;
  }
  if (!opened_) {
    // Nothing is carried before the transport opens; a close may come.
    if (core_.closed()) close_transport();
    return;
  }
  ++busy_;
  for (;;) {
    flush();
    if (core_.closed() || yielded_ || !core_.wants_resume() || core_.turn_spent()) break;
    core_.proceed(now());
  }
  --busy_;
  if (core_.closed()) {
    close_transport();
    return;
  }
  if (!yielded_ && core_.wants_resume()) {
    // Its share of this turn is answered: the rest waits for the loop to
    // have served the other connections.
    server_.add_ready(this);
  }
  backlog(core_.backlogged());
  transport_->set_reading(!yielded_ && core_.read_budget() > 0);
  arm();
  if (answering_ && answering_->writable && core_.stream_ready() && busy_ == 0) {
    // May answer more (a nested sync), or let go of its streamer.
    auto fn = std::exchange(answering_->writable, nullptr);
    fn();
  }
}

void Connection::start_h2() {
  sniffing_ = false;
  h2_ = std::make_unique<H2Link>(
      server_, *this, [this] { kick(); }, now());
}

// sync() for an HTTP/2 connection: output (a bounded number of rounds per
// turn; the rest on the loop's next turn, like pipelined HTTP/1.1 answers),
// streams that may take pieces again, reading, the timer, the close.
void Connection::h2_sync() {
  ++busy_;
  h2_->flush(*transport_, kH2RoundsPerTurn);
  --busy_;
  if (h2_->finished()) {
    close_transport();
    return;
  }
  if (!yielded_ && h2_->more()) server_.add_ready(this);
  transport_->set_reading(!h2_->session().closed());
  arm();
  if (busy_ == 0) {
    ++busy_;
    h2_->notify_writable();
    --busy_;
    if (closing_) return;
    ++busy_;
    h2_->flush(*transport_, 1);  // what the streams just queued
    --busy_;
    if (h2_->finished()) close_transport();
  }
}

void Connection::resume() {
  if (closing_) return;
  if (h2_) {
    guard("resume", [this] { sync(); });
    return;
  }
  guard("resume", [this] {
    ++busy_;
    core_.resume(now());
    --busy_;
    sync();
  });
}

// Hands the core's output to the transport until it takes no more.
void Connection::flush() {
  while (!core_.closed()) {
    const http::OutputPlan p = core_.plan();
    if (p.kind == http::OutputPlan::Kind::None) return;
    const WriteHints hints{.more = p.more, .last = p.last};
    const bool file = p.kind == http::OutputPlan::Kind::File;
    const Handed h = file ? transport_->send_file(p.fd, p.offset, p.length, hints)
                          : transport_->write(std::span(p.bufs.data(), p.nbufs), hints);
    if (h.error != 0) {
      if (h.file_error) {
        // The length promised in the head cannot be kept: the connection
        // closes rather than send a short body.
        spdlog::warn("{}: file read failed after {} bytes: {}", peer(), p.offset,
                     h.error == UV_EOF ? "unexpected end of file" : uv_strerror(h.error));
      } else {
        SPDLOG_DEBUG("{}: write failed: {}", peer(), uv_strerror(h.error));
      }
      core_.abort();
      return;
    }
    if (h.wait) return;  // on_writable() or on_write_done() comes
    core_.advance(h.now, h.queued, now());
    if (file) {
      server_.stats_.file_bytes_copied += h.queued;
      file_sent(h.now + h.queued);
    }
  }
}

void Connection::file_sent(uint64_t n) {
  if (!answering_ || answering_->file_left == 0) return;
  Answering& a = *answering_;
  a.file_left -= std::min(a.file_left, n);
  // A stream's piece: the stream goes on (end_stream reports it).
  if (a.file_left == 0 && a.open == Open::File) report(true);
}

void Connection::arm() {
  const uint64_t due = h2_ ? h2_->session().next_deadline() : core_.next_deadline();
  if (due == http::ServerConnection::kNoDeadline) return;  // a stale one finds nothing due
  const DeadlineHeap::Node& deadline = *this;
  if (deadline.scheduled() && deadline.due <= due) return;
  server_.schedule(*this, due);
}

void Connection::on_timer() {
  if (closing_) return;
  const uint64_t t = now();
  const uint64_t due = h2_ ? h2_->session().next_deadline() : core_.next_deadline();
  if (due == http::ServerConnection::kNoDeadline) return;
  if (t < due) {
    // The deadline moved since it was scheduled: wait for the rest.
    server_.schedule(*this, due);
    return;
  }
  ++busy_;
  if (h2_) {
    h2_->session().tick(t);
  } else {
    core_.tick(t);
  }
  --busy_;
  if (core_.closed()) SPDLOG_DEBUG("{}: timed out", peer());
  sync();
}

void Connection::backlog(bool on) {
  if (backlogged_ == on) return;
  backlogged_ = on;
  if (on) {
    ++server_.stats_.backlogged_connections;
    ++server_.stats_.backlogged_total;
  } else {
    --server_.stats_.backlogged_connections;
  }
}

void Connection::on_read(std::string_view data) noexcept {
  guard("read", [&] {
    if (h2_) {
      ++busy_;
      h2_->session().receive(data, now());
      --busy_;
      sync();
      return;
    }
    if (sniffing_) {
      // h2c with prior knowledge: the first bytes are the client preface.
      // While they may still be, they wait here; then the connection is
      // HTTP/2's, or the bytes go to the HTTP/1.1 core as they came.
      const std::string_view pre = http2::kPreface;
      const size_t n = std::min(pre.size() - preface_, data.size());
      if (pre.substr(preface_, n) == data.substr(0, n)) {
        preface_ += static_cast<uint8_t>(n);
        if (preface_ < pre.size()) return;
        sniffing_ = false;
        start_h2();
        std::string first(pre);
        first.append(data.substr(n));
        ++busy_;
        h2_->session().receive(first, now());
        --busy_;
        sync();
        return;
      }
      sniffing_ = false;
      if (preface_ > 0) {
        std::string first(pre.substr(0, std::exchange(preface_, 0)));
        first.append(data);
        ++busy_;
        core_.receive(first, now());
        --busy_;
        sync();
        return;
      }
    }
    ++busy_;
    core_.receive(data, now());
    --busy_;
    sync();
  });
}

void Connection::on_eof() noexcept {
  guard("read", [&] {
    ++busy_;
    if (h2_) {
      h2_->session().receive_eof(now());
      --busy_;
      sync();
      return;
    }
    if (answering_ && answering_->on_gone &&
        core_.state() == http::ServerConnection::State::Handling) {
      // A client that stops sending while it waits on a gateway's origin
      // has left (or half-closed, which a gateway cannot tell from leaving):
      // its answer is dropped and its descriptor freed now.
      core_.abort();
    } else {
      // Half-closed: every request already received is still answered, in
      // order; the core closes once nothing complete is left to answer.
      core_.receive_eof(now());
    }
    --busy_;
    sync();
  });
}

void Connection::on_error([[maybe_unused]] int status) noexcept {
  guard("read", [&] {
    SPDLOG_DEBUG("{}: connection error: {}", peer(), uv_strerror(status));
    if (h2_) h2_->session().abort();
    core_.abort();
    sync();
  });
}

void Connection::on_write_done(int status) noexcept {
  guard("write", [&] {
    if (h2_) {
      h2_->write_done(now());
      if (status < 0) h2_->session().abort();
      sync();
      return;
    }
    core_.write_done(now());
    if (status < 0) {
      SPDLOG_DEBUG("{}: write error: {}", peer(), uv_strerror(status));
      core_.abort();
    }
    sync();
  });
}

void Connection::on_writable() noexcept {
  guard("write", [&] { sync(); });
}

void Connection::reject() {
  core_.refuse(kRejectResponse);
  sync();
}

void Connection::drain() {
  if (closing_) return;
  if (h2_) {
    h2_->session().drain(now());
    kick();
    return;
  }
  core_.drain(now());
  kick();
}

void Connection::close() {
  if (closing_) return;
  if (h2_) h2_->session().abort();
  core_.abort();
  close_transport();
}

// The core is Closed: the transport goes. Marked at once (no callback of
// this connection does anything more); the memory goes in on_closed(), on
// the loop's next turn.
void Connection::close_transport() {
  if (closing_) return;
  closing_ = true;
  if (h2_) h2_->session().abort();  // its streams end (access log, on_gone)
  if (answering_ && answering_->on_gone) {
    auto gone = std::exchange(answering_->on_gone, nullptr);
    uv::guarded("gone", [&] { gone(); });
  }
  if (yielded_) server_.remove_ready(this);
  backlog(false);
  if (answering_) {
    Answering& a = *answering_;
    if (a.self) *a.self = nullptr;
    a.writable = nullptr;
    if (a.open == Open::File || a.open == Open::Stream) {
      a.answer_bytes -= std::min(a.answer_bytes, a.file_left);
      report(false);
    }
    a.file_left = 0;
  }
  server_.unschedule(*this);
  server_.connection_closed(this);
  if (transport_) {
    transport_.reset();  // on_closed() comes on a later loop turn
  } else {
    delete this;  // no transport was made (start failed)
  }
}

// ------------------------------------------------------------------ Server

Server::Server(uv_loop_t* loop, ServerOptions options, Handler handler)
    : loop_(loop),
      handler_(std::move(handler)),
      group_(options.group ? options.group : std::make_shared<ServerGroup>()) {
  set_options(std::move(options));
}

Server::~Server() {
  // The daemon closes and runs the loop first; anything left is a bug, but
  // freeing it here would hand libuv dangling memory, so it is left alone.
  if (!closed()) spdlog::critical("server destroyed while open");
}

namespace {
// Listener options, set once per listener rather than once per connection.
// TCP_NODELAY: inherited by every accepted socket (Linux).
// TCP_DEFER_ACCEPT: the kernel completes the handshake but hands a connection
// over only once its first bytes came (HTTP clients speak first), or, for a
// client that stays silent, after about kDeferAcceptSeconds: the loop is woken
// once per connection instead of twice (accept, then read), and the handshake's
// last ACK costs the client's side no wake-up of ours. Apache httpd does this
// for HTTP by default; nginx (`deferred`) and HAProxy (`defer-accept`) offer it.
// Both are an optimisation only: a socket that refuses them (not TCP) still
// serves. `rc` is the result of the bind or open that gave `tcp` its socket;
// on failure the handle is closed and freed.
constexpr int kDeferAcceptSeconds = 1;
constexpr std::chrono::milliseconds kWaitingRetry{100};

uint64_t soft_nofile() {
  struct rlimit lim {};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return UINT64_MAX;
  return lim.rlim_cur;
}

// A bound socket (SO_REUSEADDR as libuv sets it, SO_REUSEPORT when asked:
// libuv 1.44 cannot); the descriptor, or a libuv error (< 0).
int bound_socket(const sockaddr* sa, bool reuse_port) {
  const int fd = ::socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return uv_translate_sys_error(errno);
  const int on = 1;
  const auto len = static_cast<socklen_t>(sa->sa_family == AF_INET6 ? sizeof(sockaddr_in6)
                                                                    : sizeof(sockaddr_in));
  if (::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
      (reuse_port && ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0) ||
      ::bind(fd, sa, len) != 0) {
    const int err = uv_translate_sys_error(errno);
    ::close(fd);
    return err;
  }
  return fd;
}

// A socket bound for Sharing::First or Join (see server.hpp). SO_REUSEPORT
// alone would let a second daemon of the same user join a port in use, so
// First proves the port free with a plain bind before it shares it.
int bind_shared(Address addr, bool first) {
  if (first) {
    const int probe = bound_socket(addr.sa(), false);
    if (probe < 0) return probe;
    sockaddr_storage got{};
    socklen_t len = sizeof got;
    const int rc = ::getsockname(probe, reinterpret_cast<sockaddr*>(&got), &len);
    ::close(probe);
    if (rc != 0) return uv_translate_sys_error(errno);
    addr.storage = got;  // the address with the port the kernel gave (port 0)
  }
  return bound_socket(addr.sa(), true);
}

// The kernel caps it at net.core.somaxconn (4096 by default since Linux
// 5.4). A listener takes at most kAcceptBatch connections per wake, so a
// burst waits in this queue longer than with uv_listen's accept-them-all:
// 2,000 simultaneous connects under ASan overflowed libuv's usual 511.
constexpr int kListenBacklog = 4096;
// Connections one listener accepts per wake of its loop. Workers sharing
// one inherited socket are all woken by a burst; each takes a few and goes
// back to its loop, so the burst spreads over them rather than all going to
// the first awake (nginx's multi_accept off takes one; 8 costs fewer wakes).
constexpr int kAcceptBatch = 8;
}  // namespace

int Server::start_listener(int fd, int rc, TransportLayer layer) {
  nofile_ = soft_nofile();
  if (rc != 0) {
    if (fd >= 0) ::close(fd);
    return rc;
  }
  const int on = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &kDeferAcceptSeconds, sizeof kDeferAcceptSeconds);
  // Non-blocking (an inherited socket may not be; its dups share the flag):
  // another worker may take the connection this one was woken for.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
      ::listen(fd, kListenBacklog) != 0) {
    rc = uv_translate_sys_error(errno);
    ::close(fd);
    return rc;
  }
  auto l = std::make_unique<Listener>();
  Listener* raw = l.get();
  l->fd = fd;
  l->layer = std::move(layer);
  l->poll = uv::make_poll(
      loop_, fd, [this, raw](int status, int) { on_listener(*raw, status); }, &rc);
  if (!l->poll) {
    ::close(fd);
    return rc;
  }
  l->poll->on_closed = [fd] { ::close(fd); };
  rc = uv::poll_start(l->poll.get(), UV_READABLE);
  if (rc == 0) listeners_.push_back(std::move(l));
  return rc;
}

int Server::listen(const std::string& address, uint16_t port, Sharing sharing,
                   TransportLayer layer) {
  std::string err;
  auto addr = resolve(address, port, &err);
  if (!addr) return UV_EADDRNOTAVAIL;
  const int fd = sharing == Sharing::None ? bound_socket(addr->sa(), false)
                                          : bind_shared(*addr, sharing == Sharing::First);
  return start_listener(fd, fd < 0 ? fd : 0, std::move(layer));
}

int Server::adopt(int fd, TransportLayer layer) { return start_listener(fd, 0, std::move(layer)); }

uint16_t Server::port() const {
  if (listeners_.empty()) return 0;
  return local_port(listeners_.front()->fd);
}

void Server::set_options(ServerOptions options) {
  options_ = std::move(options);
  conn_options_.header_timeout = options_.header_timeout;
  conn_options_.idle_timeout = options_.idle_timeout;
  conn_options_.send_timeout = options_.send_timeout;
  conn_options_.limits = options_.limits;
  common_headers_.clear();  // the Server header may have changed
}

ServerStats Server::stats() const {
  ServerStats s = stats_;
  s.requests_total = conn_stats_.requests_total;
  s.errors_total = conn_stats_.errors_total;
  s.bytes_sent = conn_stats_.bytes_sent;
  return s;
}

void Server::on_listener(Listener& l, int status) {
  if (status < 0) {
    spdlog::warn("listening socket: {}", uv_strerror(status));
    pause_listener(l, true);
    return;
  }
  for (int i = 0; i < kAcceptBatch; ++i) {
    if (out_of_descriptors(l.fd)) {
      pause_listener(l, false);
      return;
    }
    const int fd = ::accept4(l.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      // Gone before we took it (ECONNABORTED) or interrupted: the next.
      if (err == EINTR || err == ECONNABORTED) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return;  // none left (or another worker's)
      // EMFILE after all (descriptors opened since the probe), ENFILE,
      // ENOBUFS, ENOMEM: the client waits in the backlog, and this listener
      // rests rather than spin on a socket that stays readable.
      std::lock_guard lock(group_->mu);
      const auto said = group_->fd_shortage.failed(std::chrono::steady_clock::now());
      if (said.first) {
        spdlog::warn("accept: {} (further failures are counted, not logged one by one)",
                     uv_strerror(uv_translate_sys_error(err)));
      } else if (said.repeated > 0) {
        spdlog::warn("accept: {} {} more times", uv_strerror(uv_translate_sys_error(err)),
                     said.repeated);
      }
      pause_listener(l, true);
      return;
    }
    accept_one(l, fd);
    // Nothing a new connection runs can drain or close the server (it has
    // read nothing yet), but a listener gone would be freed memory.
    if (draining_) return;
  }
}

void Server::pause_listener(Listener& l, bool retry_by_timer) {
  uv_poll_stop(&l.poll->raw);
  l.paused = true;
  waiting_ = true;
  if (!retry_by_timer && options_.accepting_servers <= 1) return;  // our closes resume it
  if (!waiting_timer_) {
    waiting_timer_ = uv::make_timer(loop_, [this] { resume_waiting(); });
    if (!waiting_timer_) return;
  }
  uv::timer_start(waiting_timer_.get(), static_cast<uint64_t>(kWaitingRetry.count()), 0);
}

// Polling again: a connection still pending wakes the loop at once.
void Server::resume_waiting() {
  if (!std::exchange(waiting_, false)) return;
  for (auto& l : listeners_) {
    if (std::exchange(l->paused, false)) uv::poll_start(l->poll.get(), UV_READABLE);
  }
}

// Accepting until accept() fails with EMFILE would leave a connection we
// cannot serve (libuv's uv_listen accepts and closes it, its EMFILE trick,
// without a word to anyone). Instead, when the next accept would take the
// last descriptor, the connection is left unaccepted: the listener is not
// polled, new clients wait in the kernel's backlog, and the next connection
// of ours to close lets them in (nginx disables accept events likewise).
// Probing costs a dup and a close, so only near the limit: each connection
// may hold a socket and a file.
bool Server::out_of_descriptors(int listener_fd) {
  constexpr uint64_t kDescriptorsBesideConnections = 64;
  bool full = false;
  // Every worker's connections take descriptors of the one process.
  const uint64_t open = group_->connections.load();
  if (2 * open + kDescriptorsBesideConnections >= nofile_) {
    const int fd = listener_fd;
    // One free descriptor for each accepting server (this one's next
    // accept, and each other's), or this one holds its connection back.
    std::vector<int> probes;
    while (!full && probes.size() < std::max<uint32_t>(options_.accepting_servers, 1)) {
      const int probe = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
      if (probe >= 0) probes.push_back(probe);
      full = probe < 0 && (errno == EMFILE || errno == ENFILE);
      if (probe < 0) break;
    }
    for (const int probe : probes) ::close(probe);
  }
  if (!full && !group_->short_of_fds.load()) return false;  // the common case: no lock
  std::lock_guard lock(group_->mu);
  auto& shortage = group_->fd_shortage;
  if (!full) {
    if (!shortage.active()) return false;
    if (const auto waited = shortage.succeeded(std::chrono::steady_clock::now())) {
      spdlog::info("file descriptors available again ({} more connections had waited)", *waited);
    }
    group_->short_of_fds = shortage.active();
    return false;
  }
  const auto said = shortage.failed(std::chrono::steady_clock::now());
  group_->short_of_fds = true;
  if (said.first) {
    spdlog::warn(
        "out of file descriptors ({} connections, limit {}): new connections wait in the "
        "listen backlog until one closes",
        open, nofile_);
  } else if (said.repeated > 0) {
    spdlog::warn("still out of file descriptors: {} more connections had to wait", said.repeated);
  }
  return true;
}

void Server::accept_one(Listener& l, int fd) {
  const TransportLayer* layer = l.layer ? &l.layer : nullptr;
  auto* c = new Connection(*this, uv_now(loop_));
  c->next_ = connections_;
  if (connections_ != nullptr) connections_->prev_ = c;
  connections_ = c;
  ++stats_.active_connections;
  const uint64_t open = group_->connections.fetch_add(1) + 1;
  if (open > options_.max_connections) {
    // Over the limit: answer 503 rather than leave the client in the backlog.
    ++stats_.rejected_total;
    if (!c->start(fd, layer)) {
      c->close();
      return;
    }
    c->reject();
    return;
  }
  ++stats_.connections_total;
  if (!c->start(fd, layer)) c->close();
}

void Server::connection_closed(Connection* c) {
  if (c->prev_ != nullptr) c->prev_->next_ = c->next_;
  if (c->next_ != nullptr) c->next_->prev_ = c->prev_;
  if (connections_ == c) connections_ = c->next_;
  c->prev_ = c->next_ = nullptr;
  --stats_.active_connections;
  group_->connections.fetch_sub(1);
  // Its descriptor is free: the connections left waiting may have it.
  resume_waiting();
  maybe_drained();
}

void Server::add_ready(Connection* c) {
  if (!ready_idle_) {
    ready_idle_ = uv::make_idle(loop_, [this] { on_ready(); });
    if (!ready_idle_) return;  // it resumes when its client reads or writes again
  }
  c->yielded_ = true;
  c->ready_prev_ = nullptr;
  c->ready_next_ = ready_;
  if (ready_ != nullptr) ready_->ready_prev_ = c;
  ready_ = c;
  uv::idle_start(ready_idle_.get());
}

void Server::remove_ready(Connection* c) {
  if (c->ready_prev_ != nullptr) c->ready_prev_->ready_next_ = c->ready_next_;
  if (c->ready_next_ != nullptr) c->ready_next_->ready_prev_ = c->ready_prev_;
  if (ready_ == c) ready_ = c->ready_next_;
  if (resuming_ == c) resuming_ = c->ready_next_;
  c->ready_prev_ = c->ready_next_ = nullptr;
  c->yielded_ = false;
}

// Runs before the loop polls for I/O (with a zero timeout while a connection
// is ready): every connection that yielded takes its next share of requests.
// One that yields again waits for the next turn.
void Server::on_ready() {
  resuming_ = ready_;
  ready_ = nullptr;
  while (Connection* c = resuming_) {
    remove_ready(c);
    c->resume();
  }
  if (ready_ == nullptr && ready_idle_) uv_idle_stop(&ready_idle_->raw);
}

void Server::schedule(DeadlineHeap::Node& n, uint64_t due) {
  deadlines_.set(n, due);
  arm_deadlines();
}

void Server::unschedule(DeadlineHeap::Node& n) {
  deadlines_.remove(n);
  // An empty heap stops the timer (a drained loop must be free to end); one
  // whose soonest deadline moved later lets it fire early and re-arm.
  if (deadlines_.size() == 0 && deadline_timer_) uv_timer_stop(&deadline_timer_->raw);
}

void Server::arm_deadlines() {
  const uint64_t next = deadlines_.next_due();
  if (next == DeadlineHeap::kNever) return;
  if (!deadline_timer_) {
    deadline_timer_ = uv::make_timer(loop_, [this] { on_deadlines(); });
    if (!deadline_timer_) return;  // out of memory: timeouts wait for the next arm
  }
  if (uv_is_active(deadline_timer_->base()) && deadline_timer_due_ <= next) return;
  const uint64_t t = uv_now(loop_);
  deadline_timer_due_ = next;
  uv::timer_start(deadline_timer_.get(), next > t ? next - t : 0, 0);
}

void Server::on_deadlines() {
  const uint64_t t = uv_now(loop_);
  // Each connection is taken out before it is told: what it does (close,
  // schedule itself or another again) changes the heap under this loop.
  while (DeadlineHeap::Node* n = deadlines_.pop_due(t)) {
    auto* c = static_cast<Connection*>(n);
    c->guard("timer", [c] { c->on_timer(); });
  }
  arm_deadlines();
}

void Server::maybe_drained() {
  if (!draining_ || connections_ != nullptr || !on_drained_) return;
  if (!drained_timer_) {
    drained_timer_ = uv::make_timer(loop_, [this] {
      if (connections_ != nullptr || !on_drained_) return;
      auto cb = std::move(on_drained_);
      on_drained_ = nullptr;
      cb();
    });
    if (!drained_timer_) return;
  }
  uv::timer_start(drained_timer_.get(), 0, 0);
}

void Server::drain(std::function<void()> on_drained) {
  draining_ = true;
  waiting_ = false;  // closing the listeners closes the connections left waiting
  on_drained_ = std::move(on_drained);
  listeners_.clear();
  for (Connection* c = connections_; c != nullptr;) {
    Connection* next = c->next_;
    c->drain();
    c = next;
  }
  maybe_drained();
}

void Server::close() {
  draining_ = true;
  waiting_ = false;
  uv::close(waiting_timer_);
  on_drained_ = nullptr;
  uv::close(deadline_timer_);
  uv::close(drained_timer_);
  listeners_.clear();
  while (connections_ != nullptr) connections_->close();
  uv::close(ready_idle_);
}

const std::string& Server::common_headers() {
  const uint64_t now = static_cast<uint64_t>(std::time(nullptr));
  if (now != date_second_ || common_headers_.empty()) {
    date_second_ = now;
    common_headers_.clear();
    http::HeadWriter w(common_headers_);
    w.header("Date", http::http_date(static_cast<int64_t>(now)));
    w.header("Server", options_.server_header);
  }
  return common_headers_;
}

}  // namespace cdn::net
