// SPDX-License-Identifier: MIT
#include "common/net/server.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <optional>

#include "common/net/address.hpp"

namespace cdn::net {

namespace {
// What a connection may hold for a client that sends requests faster than it
// reads the answers (pipelining, never reading): past any of these bounds it
// takes no further request and stops reading, so the kernel's socket buffers
// push back on the client, until the client has taken some answers.
// - Bytes read but not parsed yet (pipelined behind the request being
//   answered, or left for the next turn): the connection reads no more than
//   this (see on_alloc), and stops reading when it holds this much.
constexpr size_t kMaxPending = 16 * 1024;
// - Answers waiting behind writes the kernel has not taken yet are copied
//   into one output buffer (see submit()); more than this and no request is
//   taken. One coalesced write of about as much may be under way besides.
constexpr size_t kMaxOutput = 8 * 1024;
// - Answers up to this size are coalesced; bigger ones keep their own write
//   (an owned body is not copied). A pooled write keeps buffers up to this
//   size for the next answer; of bigger ones the connection keeps one spare.
constexpr size_t kCoalesceMax = 8 * 1024;
// The output buffer's size: room for kMaxOutput and one more answer, so that
// it never grows while answers are coalesced.
constexpr size_t kOutputCapacity = kMaxOutput + kCoalesceMax;
// - Writes under way (each one a WriteReq, about 1 KiB with its head).
constexpr int kMaxQueuedWrites = 16;
// - Bytes queued for the kernel, owned bodies included (they cost no copy,
//   but pin their cache entry).
constexpr size_t kMaxWriteQueue = 1024 * 1024;
// Pipelined requests answered in one go before the connection yields to the
// others (it resumes from the server's idle handle, after the loop polled).
constexpr unsigned kMaxAnswersPerTurn = 32;
// Files go out with sendfile(2) while the socket takes them. When it is full,
// the loop waits for it to drain with a uv_poll on a dup of the socket (libuv
// has no "writable" callback for a TCP handle, and one fd cannot carry two
// watchers; epoll tells the dup apart), and sendfile resumes: no file byte is
// copied through user space. Where that poll cannot be set up (dup fails, or
// the head itself is still queued in libuv), one chunk read with pread goes
// through uv_write instead, whose callback says when the socket drained; that
// chunk is small so that little is copied. Without sendfile (EINVAL/ENOSYS)
// every chunk is big.
constexpr size_t kFileChunk = 256 * 1024;
constexpr size_t kWakeChunk = 32 * 1024;
constexpr size_t kSendfileMax = 1 << 30;
constexpr uint64_t kNever = UINT64_MAX;
constexpr size_t kReadBuffer = kMaxPending;
// Bodies up to this size without an owner are copied into the head's buffer.
constexpr size_t kInlineBody = 4096;
// A response head is built in a buffer this big from the start (see take_write).
constexpr size_t kHeadReserve = 512;

constexpr std::string_view kRejectResponse =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
    "Connection: close\r\n\r\n";
}  // namespace

// One write handed to libuv. Owns the bytes it writes (or keeps their owner
// alive) and its connection outlives it (freed only after every write callback).
struct WriteReq {
  uv_write_t req{};
  Connection* conn = nullptr;
  std::string head;
  std::string body_copy;
  std::shared_ptr<const void> owner;
  uv_buf_t bufs[2]{};
  unsigned nbufs = 0;
  bool file_chunk = false;
  size_t bytes = 0;
  WriteReq* next_free = nullptr;  // in its connection's free list
};

class Connection {
 public:
  enum class State { Reading, Handling, Writing, Closing };

  explicit Connection(Server& server)
      : server_(server), parser_(server.options_.limits), exchange_(*this) {}
  ~Connection() {
    while (free_writes_ != nullptr) {
      WriteReq* w = free_writes_;
      free_writes_ = w->next_free;
      if (w != &first_write_) delete w;
    }
  }

  bool start(uv_stream_t* listener);
  void close();
  void reject();
  // Drain: close now when idle, else after the response in progress.
  void drain();

  Server& server_;
  uv_tcp_t tcp_{};
  uv_timer_t timer_{};
  int fd_ = -1;  // the socket, for send/sendfile while libuv's write queue is empty
  // Timeouts: deadline_ is the loop time (ms) at which the connection times
  // out; the libuv timer is only restarted when it would fire too late, and
  // on_timer re-arms itself for a deadline that moved further away, so a
  // request on a kept-alive connection costs no timer-heap update.
  uint64_t deadline_ = kNever;
  uint64_t timer_due_ = 0;
  int open_handles_ = 0;
  Connection* prev_ = nullptr;
  Connection* next_ = nullptr;
  State state_ = State::Reading;

  http::RequestParser parser_;
  std::string pending_;  // bytes read but not yet parsed
  // "ip:port" of the client, for logs: asked of the kernel (getpeername) the
  // first time it is needed, which without an access log or admin request is
  // never for most connections.
  std::string peer_;
  std::string peer_ip_;
  sockaddr_storage peer_addr_{};
  bool peer_known_ = false;
  const std::string& peer();
  const sockaddr* peer_address();

  // The answer being made, for ServerOptions::on_complete (see complete()).
  int answer_status_ = 0;
  uint64_t answer_bytes_ = 0;
  uint64_t request_start_ns_ = 0;
  bool answer_open_ = false;  // begun, not reported yet
  std::string note_cache_;
  std::string note_upstream_;
  void complete(bool whole);
  bool reading_ = false;
  bool request_started_ = false;  // some bytes of the next request arrived
  bool keep_alive_ = true;        // of the response being built
  bool close_after_write_ = false;
  bool peer_eof_ = false;
  bool more_input_ = false;  // bytes after the request being handled (pipelined)

  int pending_writes_ = 0;
  // Small answers made while writes are under way, coalesced in the order
  // they were made (bounded by kMaxOutput); handed to libuv as one write when
  // those writes are done, or before a write that cannot be coalesced.
  // Invariant: empty unless pending_writes_ > 0.
  std::string out_;
  // A buffer of a coalesced write that is done, for out_ to reuse: a client
  // that does not read makes out_ and one write under way trade buffers
  // rather than allocate one per write.
  std::string spare_;
  // Writes are pooled per connection. The first lives inside the connection
  // (most connections never have two under way), more are allocated on demand
  // and freed with the connection.
  WriteReq first_write_;
  WriteReq* free_writes_ = &first_write_;
  WriteReq* current_ = nullptr;  // being built by the Exchange
  std::optional<http::HeadWriter> writer_;
  bool finished_ = false;

  // A file being streamed.
  int file_fd_ = -1;
  uint64_t file_offset_ = 0;
  uint64_t file_remaining_ = 0;
  bool no_sendfile_ = false;  // sendfile refused this file: pread + uv_write only
  // TCP_CORK while a file fills the socket (see cork()).
  bool corked_ = false;
  std::unique_ptr<char[]> chunk_;

  Exchange exchange_;
  uint64_t seq_ = 0;        // requests taken on this connection (Deferred binds to one)
  uint64_t continued_ = 0;  // the request that was sent 100 Continue
  // Answers an Expect header once the head is read (RFC 9110 10.1.1): 100
  // Continue for 100-continue, 417 (and false) for any other expectation;
  // an HTTP/1.0 client's is ignored. The body is read and discarded
  // whatever the handler answers, so the client may send it at once.
  bool meet_expectation(bool head_only);
  bool streaming_ = false;  // a chunked body is being sent piece by piece
  bool deferred_ = false;
  bool in_handler_ = false;
  // Deferred answers hold this weakly; it points at nothing once closed.
  std::shared_ptr<Connection*> self_;
  // Yielded after kMaxAnswersPerTurn answers: pending_ holds the rest, reads
  // are stopped, and the connection waits in the server's ready list.
  bool yielded_ = false;
  // Takes no request until its client reads some answers (output_full()).
  bool backlogged_ = false;
  void backlog(bool on);
  Connection* ready_prev_ = nullptr;
  Connection* ready_next_ = nullptr;

  static void on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_timer(uv_timer_t* t);
  static void on_close(uv_handle_t* h);
  static void on_writable(uv_poll_t* p, int status, int events);

  // The writable watch for sendfile (see kWakeChunk): a dup of the socket,
  // made on the first file that fills the socket and kept until close.
  uv_poll_t out_poll_{};
  int out_fd_ = -1;
  bool out_poll_active_ = false;
  bool wait_writable();
  void stop_writable_wait();
  void file_progressed();

  void read_start();
  void read_stop();
  size_t process(std::string_view input);
  void resume();
  void yield();
  // Bytes on their way to the client that libuv or out_ still hold.
  size_t queued() const {
    return uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&tcp_)) +
           out_.size();
  }
  // Holds as much as a client that does not read may make it hold.
  bool output_full() const {
    return out_.size() >= kMaxOutput || pending_writes_ >= kMaxQueuedWrites ||
           queued() >= kMaxWriteQueue;
  }
  void handle_request();
  void send_error(int status, std::string_view reason);
  void after_response();
  void arm(std::chrono::milliseconds ms);
  void disarm() { deadline_ = kNever; }
  WriteReq* take_write();
  void release(WriteReq* w);
  void submit(WriteReq* w);
  void coalesce(WriteReq* w);
  void flush_output();
  void queue_write(WriteReq* w, unsigned first);
  // submit() of w's head (bufs[0]), after any separate body finish() put in bufs[1].
  void submit_head(WriteReq* w);
  void send_more_file();
  bool last_response_on_socket();
  int send_held_for_fin(const WriteReq* w);
  enum class Pump { Done, Pending, Failed };
  Pump pump_file(WriteReq* w);
  bool send_chunk(WriteReq* w, size_t max);
  void finish_file_stream();
  void cork(bool on);
  void answered();
  bool idle() const {
    return state_ == State::Reading && !request_started_ && pending_writes_ == 0 &&
           pending_.empty();
  }
};

// ---------------------------------------------------------------- Exchange

const http::Request& Exchange::request() const { return conn_.parser_.request(); }
const std::string& Exchange::peer() const { return conn_.peer(); }
const sockaddr* Exchange::peer_address() const { return conn_.peer_address(); }
void Exchange::note_cache(std::string_view status) { conn_.note_cache_.assign(status); }
void Exchange::note_upstream(std::string_view upstream) { conn_.note_upstream_.assign(upstream); }
bool Exchange::is_head() const { return conn_.parser_.request().method == "HEAD"; }

void Exchange::interim(int status, const std::vector<http::Header>& headers) {
  Connection& c = conn_;
  const auto& req = c.parser_.request();
  if (status < 100 || status > 199 || c.current_ != nullptr || c.finished_ ||
      c.state_ == Connection::State::Closing ||
      (req.version_major == 1 && req.version_minor == 0)) {
    return;
  }
  WriteReq* w = c.take_write();
  std::string& out = w->head;
  out.append("HTTP/1.1 ").append(std::to_string(status)).append(" ");
  out.append(http::reason_phrase(status)).append("\r\n");
  for (const auto& h : headers) out.append(h.name).append(": ").append(h.value).append("\r\n");
  out.append("\r\n");
  c.submit_head(w);
}

http::HeadWriter& Exchange::begin(int status, bool relayed) {
  Connection& c = conn_;
  c.current_ = c.take_write();
  c.writer_.emplace(c.current_->head);
  c.writer_->status_line(status);
  if (!relayed) c.writer_->prebuilt(c.server_.common_headers());
  c.answer_status_ = status;
  c.answer_bytes_ = 0;
  c.answer_open_ = true;
  const auto& req = c.parser_.request();
  // A drain or a half-close may have begun since the request arrived (e.g.
  // while a deferred answer was pending): say so in this response.
  // A half-closed peer with nothing more to answer gets its last response too.
  const bool last = c.peer_eof_ && !c.more_input_ && c.pending_.empty();
  if (c.server_.draining_ || c.close_after_write_ || last) c.keep_alive_ = false;
  if (!c.keep_alive_) {
    c.writer_->header("Connection", "close");
  } else if (req.version_major == 1 && req.version_minor == 0) {
    c.writer_->header("Connection", "keep-alive");
  }
  return *c.writer_;
}

void Exchange::finish(std::string_view body, std::shared_ptr<const void> owner) {
  Connection& c = conn_;
  if (c.current_ == nullptr || c.finished_) return;
  c.writer_->end();
  WriteReq* w = c.current_;
  if (!is_head()) c.answer_bytes_ = body.size();
  if (!is_head() && !body.empty()) {
    if (!owner && body.size() <= kInlineBody) {
      // Small bodies (redirects, errors, JSON) go in the head's buffer: one
      // buffer to write, and no allocation once the buffer has grown.
      w->head.append(body);
    } else if (owner) {
      w->owner = std::move(owner);
      w->bufs[1] = uv_buf_init(const_cast<char*>(body.data()), static_cast<unsigned>(body.size()));
      w->nbufs = 2;
    } else {
      w->body_copy.assign(body);
      w->bufs[1] = uv_buf_init(w->body_copy.data(), static_cast<unsigned>(w->body_copy.size()));
      w->nbufs = 2;
    }
  }
  finish_prepared();
}

// The head (ended, with any inline body) is in current_->head, and bufs[1]
// holds a separate body when nbufs is 2: send it.
void Exchange::finish_prepared() {
  Connection& c = conn_;
  WriteReq* w = c.current_;
  c.current_ = nullptr;
  c.finished_ = true;
  c.submit_head(w);
  c.complete(true);
  if (c.deferred_ && !c.in_handler_) c.answered();
}

void Exchange::finish_file(int fd, uint64_t offset, uint64_t length) {
  Connection& c = conn_;
  if (c.current_ == nullptr || c.finished_) {
    ::close(fd);
    return;
  }
  if (is_head() || length == 0) {
    ::close(fd);
    finish();
    return;
  }
  c.writer_->end();
  WriteReq* w = c.current_;
  c.current_ = nullptr;
  c.finished_ = true;
  c.file_fd_ = fd;
  c.file_offset_ = offset;
  c.file_remaining_ = length;
  c.answer_bytes_ = length;  // less what is left unsent if the connection closes first
  c.no_sendfile_ = false;
  w->bufs[0] = uv_buf_init(w->head.data(), static_cast<unsigned>(w->head.size()));
  w->nbufs = 1;
  if (c.pump_file(w) == Connection::Pump::Failed) {
    c.close();
    return;
  }
  if (c.deferred_ && !c.in_handler_) c.answered();
}

Deferred Exchange::defer() {
  Connection& c = conn_;
  c.deferred_ = true;
  if (!c.self_) c.self_ = std::make_shared<Connection*>(&c);
  return Deferred(c.self_, c.seq_);
}

void Exchange::start_stream() {
  Connection& c = conn_;
  if (c.current_ == nullptr || c.finished_ || !c.deferred_) return;
  c.writer_->header("Transfer-Encoding", "chunked");
  c.writer_->end();
  WriteReq* w = c.current_;
  c.current_ = nullptr;
  // Finished as far as the handler's answer goes (a stray finish() is
  // ignored); the connection stays deferred until end_stream().
  c.finished_ = true;
  c.streaming_ = true;
  c.submit_head(w);
}

bool Exchange::streaming() const {
  return conn_.streaming_ && conn_.state_ != Connection::State::Closing;
}

bool Exchange::send_piece(std::string_view piece) {
  Connection& c = conn_;
  if (!streaming() || piece.empty()) return false;
  // Anything still queued in libuv means the kernel's send buffer is full:
  // the client has stopped reading.
  if (c.queued() > 0) return false;
  WriteReq* w = c.take_write();
  char size[20];
  const int n = std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
  c.answer_bytes_ += piece.size();
  w->head.reserve(static_cast<size_t>(n) + piece.size() + 2);
  w->head.append(size, static_cast<size_t>(n)).append(piece).append("\r\n");
  c.submit_head(w);
  return c.state_ != Connection::State::Closing;
}

void Exchange::end_stream() {
  Connection& c = conn_;
  if (!streaming()) return;
  c.streaming_ = false;
  WriteReq* w = c.take_write();
  w->head.assign("0\r\n\r\n");
  c.submit_head(w);
  c.complete(true);
  if (c.deferred_ && !c.in_handler_) c.answered();
}

Exchange* Deferred::exchange() const {
  auto p = conn_.lock();
  if (!p || *p == nullptr) return nullptr;
  Connection* c = *p;
  if (!c->deferred_ || c->state_ != Connection::State::Handling || c->seq_ != seq_) return nullptr;
  return &c->exchange_;
}

void Exchange::reply(int status, std::string_view text,
                     std::initializer_list<std::pair<std::string_view, std::string_view>> headers) {
  auto& h = begin(status);
  h.header("Content-Type", "text/plain; charset=utf-8");
  for (const auto& [name, value] : headers) h.header(name, value);
  h.header("Content-Length", static_cast<uint64_t>(text.size() + 1));
  Connection& c = conn_;
  if (text.size() < kInlineBody && c.current_ != nullptr && !c.finished_) {
    // The text and its newline straight after the head (see finish()).
    c.writer_->end();
    if (!is_head()) {
      c.current_->head.append(text).push_back('\n');
      c.answer_bytes_ = text.size() + 1;
    }
    finish_prepared();
    return;
  }
  std::string body(text);
  body.push_back('\n');
  finish(body);
}

// -------------------------------------------------------------- Connection

bool Connection::start(uv_stream_t* listener) {
  uv_loop_t* loop = listener->loop;
  uv_tcp_init(loop, &tcp_);
  tcp_.data = this;
  ++open_handles_;
  uv_timer_init(loop, &timer_);
  timer_.data = this;
  ++open_handles_;
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&tcp_)) != 0) return false;
  // TCP_NODELAY comes from the listener (see start_listener).
  uv_os_fd_t fd = -1;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp_), &fd) == 0) fd_ = fd;
  read_start();
  arm(server_.options_.header_timeout);
  return true;
}

const sockaddr* Connection::peer_address() {
  // Once closed, fd_ is -1: the number may already belong to another socket.
  if (!peer_known_ && fd_ >= 0) {
    socklen_t len = sizeof peer_addr_;
    if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&peer_addr_), &len) == 0) {
      peer_known_ = true;
      peer_ip_ = ip_of(peer_addr_);
    }
  }
  return peer_known_ ? reinterpret_cast<const sockaddr*>(&peer_addr_) : nullptr;
}

const std::string& Connection::peer() {
  if (peer_.empty()) {
    peer_ = peer_address() != nullptr ? Address{peer_addr_}.str() : std::string("?");
  }
  return peer_;
}

// The end of one answer: the one place on_complete is called from. Every
// answer reaches it once: finish*() when queued whole, end_stream(), a file
// when sent (finish_file_stream), or close() for what was still under way.
void Connection::complete(bool whole) {
  if (!answer_open_) return;
  answer_open_ = false;
  const auto& report = server_.options_.on_complete;
  if (!report) return;
  const uint64_t elapsed_ns = uv_hrtime() - request_start_ns_;
  const sockaddr* addr = peer_address();
  report(RequestRecord{
      .request = parser_.request(),
      .peer = addr,
      .client = addr != nullptr ? std::string_view(peer_ip_) : std::string_view("-"),
      .status = answer_status_,
      .body_bytes = answer_bytes_,
      .duration = std::chrono::microseconds(elapsed_ns / 1000),
      .cache = note_cache_,
      .upstream = note_upstream_,
      .whole = whole,
  });
}

void Connection::read_start() {
  if (reading_ || peer_eof_ || yielded_ || state_ == State::Closing) return;
  if (pending_.size() >= kMaxPending) return;
  if (uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), on_alloc, on_read) == 0) reading_ = true;
}

void Connection::read_stop() {
  if (!reading_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  reading_ = false;
}

void Connection::arm(std::chrono::milliseconds ms) {
  if (state_ == State::Closing) return;
  const uint64_t after = static_cast<uint64_t>(ms.count());
  deadline_ = uv_now(timer_.loop) + after;
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_)) && timer_due_ <= deadline_) return;
  timer_due_ = deadline_;
  uv_timer_start(&timer_, on_timer, after, 0);
}

void Connection::on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  // One read buffer per server: libuv calls alloc and read back to back on
  // the loop thread, and process() copies what it keeps, so sharing is safe
  // and an idle connection costs no buffer at all.
  // A read takes no more than what pending_ may still hold (it only reads
  // while it holds less than kMaxPending).
  auto* c = static_cast<Connection*>(h->data);
  auto& b = c->server_.read_buffer_;
  if (b.size() < kReadBuffer) b.resize(kReadBuffer);
  size_t len = b.size();
  if (!c->pending_.empty()) len = std::min(len, kMaxPending - c->pending_.size());
  *buf = uv_buf_init(b.data(), static_cast<unsigned>(len));
}

void Connection::on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* c = static_cast<Connection*>(s->data);
  if (c->state_ == State::Closing) return;
  if (nread > 0) {
    std::string_view data(buf->base, static_cast<size_t>(nread));
    if (!c->request_started_ && c->state_ == State::Reading && c->pending_.empty()) {
      // First bytes of a request: the whole head must arrive within
      // header_timeout from now (a slow client cannot extend it byte by byte).
      c->request_started_ = true;
      c->arm(c->server_.options_.header_timeout);
    }
    if (c->pending_.empty() && c->state_ == State::Reading) {
      const size_t used = c->process(data);
      if (c->state_ != State::Closing && used < data.size() && !c->close_after_write_) {
        c->pending_.assign(data.substr(used));
      }
    } else if (!c->close_after_write_) {
      c->pending_.append(data);
      if (c->state_ == State::Reading) c->resume();
    }
    if (c->state_ != State::Closing && c->pending_.size() >= kMaxPending) c->read_stop();
    return;
  }
  if (nread == UV_EOF) {
    // Half-closed: every request already received is still answered, in
    // order; the connection closes once nothing complete is left to answer.
    c->peer_eof_ = true;
    c->read_stop();
    if (c->state_ == State::Reading && c->pending_writes_ == 0 && c->file_fd_ < 0) c->close();
    return;
  }
  if (nread < 0) c->close();
}

size_t Connection::process(std::string_view input) {
  size_t offset = 0;
  unsigned answers = 0;
  while (state_ == State::Reading && offset < input.size()) {
    if (answers == kMaxAnswersPerTurn) {
      // Enough for this turn: the rest waits (in pending_) for the loop to
      // have served the other connections.
      yield();
      break;
    }
    const auto res = parser_.feed(input.substr(offset));
    offset += res.consumed;
    if (res.status == http::ParseStatus::NeedMore) {
      if (!request_started_) {
        request_started_ = true;
        arm(server_.options_.header_timeout);
      }
      if (parser_.headers_complete() && !meet_expectation(true)) return input.size();
      break;
    }
    if (res.status == http::ParseStatus::Error) {
      SPDLOG_DEBUG("{}: bad request: {}", peer(), res.reason);
      ++server_.stats_.errors_total;
      send_error(res.http_status, res.reason);
      return input.size();
    }
    if (!meet_expectation(false)) return input.size();
    more_input_ = offset < input.size();
    handle_request();
    more_input_ = false;
    ++answers;
  }
  return offset;
}

bool Connection::meet_expectation(bool head_only) {
  const auto& req = parser_.request();
  const auto expect = req.header("Expect");
  if (!expect || (req.version_major == 1 && req.version_minor == 0)) return true;
  if (!http::iequals(*expect, "100-continue")) {
    ++server_.stats_.errors_total;
    send_error(417, "unsupported expectation");
    return false;
  }
  if (head_only && continued_ != seq_ + 1) {
    continued_ = seq_ + 1;
    WriteReq* w = take_write();
    w->head.assign("HTTP/1.1 100 Continue\r\n\r\n");
    submit_head(w);
    if (state_ == State::Closing) return false;
  }
  return true;
}

void Connection::yield() {
  read_stop();
  server_.add_ready(this);
}

// Takes the requests already read, then reads on (unless it yielded, or
// the answers stopped it).
void Connection::resume() {
  if (yielded_ || state_ != State::Reading) return;
  if (!pending_.empty()) {
    std::string input;
    input.swap(pending_);
    const size_t used = process(input);
    if (state_ != State::Closing && used < input.size() && !close_after_write_) {
      pending_.assign(std::string_view(input).substr(used));
    }
  }
  if (state_ == State::Reading && !reading_) read_start();
}

void Connection::handle_request() {
  ++server_.stats_.requests_total;
  ++seq_;
  request_started_ = false;
  request_start_ns_ = uv_hrtime();
  note_cache_.clear();
  note_upstream_.clear();
  const auto& req = parser_.request();
  keep_alive_ = req.keep_alive && !server_.draining_;
  state_ = State::Handling;
  finished_ = false;
  deferred_ = false;
  streaming_ = false;
  disarm();
  in_handler_ = true;
  try {
    server_.handler_(exchange_);
  } catch (const std::exception& e) {
    spdlog::error("{} {} {}: handler failed: {}", peer(), req.method, req.target, e.what());
    if (current_ != nullptr) {
      // A head was begun: drop it and answer 500 instead.
      release(current_);
      current_ = nullptr;
      answer_open_ = false;
    }
    if (!finished_) {
      keep_alive_ = false;
      exchange_.reply(500, "internal error");
    }
  }
  in_handler_ = false;
  if (state_ == State::Closing || streaming_) return;  // a stream ends through its Deferred
  if (!finished_) {
    if (deferred_) return;  // answered later through a Deferred
    spdlog::error("{} {} {}: handler gave no answer", peer(), req.method, req.target);
    keep_alive_ = false;
    exchange_.reply(500, "internal error");
  }
  answered();
}

// The current request has its response queued: move on to the next one.
void Connection::answered() {
  deferred_ = false;
  if (state_ == State::Closing) return;
  if (!keep_alive_) close_after_write_ = true;
  state_ = State::Writing;
  after_response();
}

// After a response was queued or a write completed: decide whether to take
// the next request, wait for the kernel, or close.
void Connection::after_response() {
  if (state_ == State::Closing) return;
  if (backlogged_) backlog(false);
  if (file_fd_ >= 0 || pending_writes_ > 0) {
    const bool full = output_full();
    if (file_fd_ < 0 && !close_after_write_ && !full) {
      // Small answers already queued: take the next pipelined request now.
      parser_.reset();
      state_ = State::Reading;
      arm(server_.options_.send_timeout);
      resume();
      return;
    }
    state_ = State::Writing;
    arm(server_.options_.send_timeout);
    if (file_fd_ >= 0 || full) read_stop();
    if (file_fd_ < 0 && !close_after_write_ && full) backlog(true);
    return;
  }
  if (close_after_write_) {
    close();
    return;
  }
  parser_.reset();
  state_ = State::Reading;
  if (server_.draining_ && pending_.empty()) {
    close();
    return;
  }
  arm(pending_.empty() ? server_.options_.idle_timeout : server_.options_.header_timeout);
  resume();
  if (state_ != State::Reading || yielded_) return;
  // A half-closed peer can send nothing more: what is left is not a request
  // (but the rest of the input process() is going through may be).
  if (peer_eof_ && !more_input_ && pending_writes_ == 0 && file_fd_ < 0) close();
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

void Connection::send_error(int status, std::string_view reason) {
  keep_alive_ = false;
  close_after_write_ = true;
  read_stop();
  pending_.clear();
  state_ = State::Handling;
  finished_ = false;
  request_start_ns_ = uv_hrtime();
  note_cache_.clear();
  note_upstream_.clear();
  exchange_.reply(status, http::reason_phrase(status));
  (void)reason;
  state_ = State::Writing;
  after_response();
}

WriteReq* Connection::take_write() {
  WriteReq* w = free_writes_;
  if (w != nullptr) {
    free_writes_ = w->next_free;
  } else {
    w = new WriteReq();
  }
  w->conn = this;
  w->head.clear();
  // Room for a usual head (about 360 bytes from the replica) in one
  // allocation, instead of five as the string doubles while it is built.
  if (w->head.capacity() < kHeadReserve) w->head.reserve(kHeadReserve);
  w->nbufs = 0;
  w->file_chunk = false;
  return w;
}

void Connection::release(WriteReq* w) {
  w->owner.reset();
  // Pooled writes keep small buffers only: a coalesced write's (but the one
  // spare) or a copied body's would otherwise stay until the connection closes.
  if (w->head.capacity() > kCoalesceMax) {
    w->head.clear();
    if (w->head.capacity() > spare_.capacity()) spare_.swap(w->head);
    if (w->head.capacity() > kCoalesceMax) std::string().swap(w->head);
  }
  if (!w->body_copy.empty()) {
    if (w->body_copy.capacity() > kCoalesceMax) {
      std::string().swap(w->body_copy);
    } else {
      w->body_copy.clear();
    }
  }
  w->nbufs = 0;
  w->next_free = free_writes_;
  free_writes_ = w;
}

// Writes at once when libuv has nothing queued (uv_try_write keeps the
// order): a complete write needs no request, no callback and no epoll
// change. Whatever the kernel did not take is queued with uv_write.
// The response that ends the connection (Connection: close, an error): when
// nothing is queued before it, it is sent with MSG_MORE, so the kernel holds
// it until close() right after, which sends the data and the FIN in one
// segment: one packet and one wake-up less per connection for the client (and
// for us, its ACK). If anything still follows (the rest of a partial write, a
// sendfile body) it goes out without MSG_MORE, which flushes what was held.
// libuv's uv_buf_t is struct iovec's layout on Unix (documented), so the
// buffers go to sendmsg as they are.
static_assert(sizeof(uv_buf_t) == sizeof(iovec) &&
              offsetof(uv_buf_t, base) == offsetof(iovec, iov_base) &&
              offsetof(uv_buf_t, len) == offsetof(iovec, iov_len));

bool Connection::last_response_on_socket() {
  // Only an answer to a request that itself asked to close, with nothing
  // pipelined after it: an error reply (431, 503 at the connection limit)
  // closes with the client's bytes unread, so close() sends RST, which would
  // discard data still held back; it goes out at once instead.
  return !keep_alive_ && !close_after_write_ && !streaming_ && pending_.empty() && fd_ >= 0 &&
         pending_writes_ == 0 && queued() == 0;
}

int Connection::send_held_for_fin(const WriteReq* w) {
  msghdr msg{};
  msg.msg_iov = reinterpret_cast<iovec*>(const_cast<uv_buf_t*>(w->bufs));
  msg.msg_iovlen = w->nbufs;
  ssize_t n;
  do {
    n = ::sendmsg(fd_, &msg, MSG_MORE | MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n >= 0) return static_cast<int>(n);
  return errno == EAGAIN || errno == EWOULDBLOCK ? UV_EAGAIN : -errno;
}

void Connection::submit_head(WriteReq* w) {
  w->bufs[0] = uv_buf_init(w->head.data(), static_cast<unsigned>(w->head.size()));
  if (w->nbufs == 0) w->nbufs = 1;
  submit(w);
}

// Behind writes still under way, a small answer is copied into out_ (the
// client has not taken the previous ones: no point in trying the socket) and
// goes out with the answers after it in one write once those are done: one
// libuv request per kMaxOutput bytes, and no allocation (see spare_), instead
// of both per answer. Anything else goes after what out_ holds.
void Connection::submit(WriteReq* w) {
  w->bytes = 0;
  for (unsigned i = 0; i < w->nbufs; ++i) w->bytes += w->bufs[i].len;
  if (pending_writes_ > 0) {
    if (!w->file_chunk && w->bytes <= kCoalesceMax) {
      coalesce(w);
      return;
    }
    flush_output();
    if (state_ == State::Closing) {
      release(w);
      return;
    }
  }
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  size_t done = 0;
  if (!w->file_chunk) {
    const int n =
        last_response_on_socket() ? send_held_for_fin(w) : uv_try_write(stream, w->bufs, w->nbufs);
    if (n < 0 && n != UV_EAGAIN) {
      SPDLOG_DEBUG("{}: write failed: {}", peer(), uv_strerror(n));
      release(w);
      close();
      return;
    }
    done = n > 0 ? static_cast<size_t>(n) : 0;
    if (done == w->bytes) {
      server_.stats_.bytes_sent += w->bytes;
      release(w);
      return;
    }
  }
  server_.stats_.bytes_sent += done;
  w->bytes -= done;
  unsigned first = 0;
  while (done > 0 && first < w->nbufs) {
    const size_t take = std::min<size_t>(done, w->bufs[first].len);
    w->bufs[first].base += take;
    w->bufs[first].len -= take;
    done -= take;
    if (w->bufs[first].len == 0) ++first;
  }
  queue_write(w, first);
}

void Connection::coalesce(WriteReq* w) {
  if (out_.empty() && out_.capacity() < kOutputCapacity) {
    if (spare_.capacity() > out_.capacity()) out_.swap(spare_);
    out_.reserve(kOutputCapacity);
  }
  for (unsigned i = 0; i < w->nbufs; ++i) out_.append(w->bufs[i].base, w->bufs[i].len);
  release(w);
}

// Hands what out_ holds to libuv as one write (which libuv tries at once
// when nothing is queued before it).
void Connection::flush_output() {
  if (out_.empty()) return;
  WriteReq* w = take_write();
  w->head.swap(out_);
  w->bufs[0] = uv_buf_init(w->head.data(), static_cast<unsigned>(w->head.size()));
  w->nbufs = 1;
  w->bytes = w->head.size();
  queue_write(w, 0);
}

// uv_write of w's buffers from `first` on; its callback is on_write.
void Connection::queue_write(WriteReq* w, unsigned first) {
  w->req.data = w;
  const int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp_), w->bufs + first,
                          w->nbufs - first, on_write);
  if (rc != 0) {
    SPDLOG_DEBUG("{}: write failed: {}", peer(), uv_strerror(rc));
    release(w);
    close();
    return;
  }
  ++pending_writes_;
}

// Reads up to `max` bytes of the file into the connection's chunk buffer and
// queues them with uv_write (after what `w` already carries, e.g. the head).
// False on a read error (w is released).
bool Connection::send_chunk(WriteReq* w, size_t max) {
  if (!chunk_) chunk_ = std::make_unique<char[]>(kFileChunk);
  const size_t want = static_cast<size_t>(std::min<uint64_t>(file_remaining_, max));
  ssize_t got;
  do {
    got = ::pread(file_fd_, chunk_.get(), want, static_cast<off_t>(file_offset_));
  } while (got < 0 && errno == EINTR);
  if (got <= 0) {
    // The file shrank under us: the length promised in the head cannot be
    // kept, so the connection must close rather than send a short body.
    spdlog::warn("{}: file read failed after {} bytes: {}", peer(), file_offset_,
                 got == 0 ? "unexpected end of file" : std::strerror(errno));
    release(w);
    return false;
  }
  file_offset_ += static_cast<uint64_t>(got);
  file_remaining_ -= static_cast<uint64_t>(got);
  server_.stats_.file_bytes_copied += static_cast<uint64_t>(got);
  w->bufs[w->nbufs++] = uv_buf_init(chunk_.get(), static_cast<unsigned>(got));
  w->file_chunk = true;
  submit(w);
  return state_ != State::Closing;
}

// Moves the file (and first the head that `w` may carry) towards the client:
// Done when all of it is in the kernel, Pending when a uv_write of a chunk is
// under way (on_write calls again), Failed when the connection must close.
Connection::Pump Connection::pump_file(WriteReq* w) {
  const bool queue_empty = queued() == 0;
  if (w != nullptr && w->nbufs > 0) {
    // The head: straight to the socket when nothing is queued before it
    // (MSG_MORE lets it leave with the first file bytes), else with a chunk.
    if (queue_empty && !no_sendfile_ && fd_ >= 0) {
      ssize_t n;
      do {
        n = ::send(fd_, w->bufs[0].base, w->bufs[0].len, MSG_MORE | MSG_NOSIGNAL);
      } while (n < 0 && errno == EINTR);
      if (n < 0 && errno != EAGAIN) {
        SPDLOG_DEBUG("{}: send failed: {}", peer(), std::strerror(errno));
        release(w);
        return Pump::Failed;
      }
      const size_t sent = n > 0 ? static_cast<size_t>(n) : 0;
      server_.stats_.bytes_sent += sent;
      w->bufs[0].base += sent;
      w->bufs[0].len -= sent;
    }
    if (w->bufs[0].len > 0) {
      if (!send_chunk(w, kWakeChunk)) return Pump::Failed;
      return Pump::Pending;
    }
    release(w);
    w = nullptr;
  } else if (w != nullptr) {
    release(w);
  }
  while (file_remaining_ > 0) {
    if (!no_sendfile_ && fd_ >= 0 && queued() == 0) {
      off_t off = static_cast<off_t>(file_offset_);
      const size_t want = static_cast<size_t>(std::min<uint64_t>(file_remaining_, kSendfileMax));
      const ssize_t n = ::sendfile(fd_, file_fd_, &off, want);
      if (n > 0) {
        file_offset_ += static_cast<uint64_t>(n);
        file_remaining_ -= static_cast<uint64_t>(n);
        server_.stats_.bytes_sent += static_cast<uint64_t>(n);
        continue;
      }
      if (n == 0) {
        spdlog::warn("{}: file read failed after {} bytes: unexpected end of file", peer(),
                     file_offset_);
        return Pump::Failed;
      }
      if (errno == EINTR) continue;
      if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
        no_sendfile_ = true;  // e.g. a file system without splice support
      } else if (errno != EAGAIN) {
        SPDLOG_DEBUG("{}: sendfile failed: {}", peer(), std::strerror(errno));
        return Pump::Failed;
      }
    }
    // The socket is full: wait until it drains (on_writable resumes the
    // pump), or else a chunk through uv_write, whose callback resumes it.
    if (!no_sendfile_ && fd_ >= 0 && queued() == 0 && wait_writable()) {
      cork(true);
      return Pump::Pending;
    }
    if (!send_chunk(take_write(), no_sendfile_ ? kFileChunk : kWakeChunk)) return Pump::Failed;
    return Pump::Pending;
  }
  finish_file_stream();
  return Pump::Done;
}

bool Connection::wait_writable() {
  if (out_fd_ < 0) {
    const int dup = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) return false;
    if (uv_poll_init(tcp_.loop, &out_poll_, dup) != 0) {
      ::close(dup);
      return false;
    }
    out_fd_ = dup;
    out_poll_.data = this;
    ++open_handles_;
  }
  if (!out_poll_active_) {
    if (uv_poll_start(&out_poll_, UV_WRITABLE, on_writable) != 0) return false;
    out_poll_active_ = true;
  }
  return true;
}

void Connection::stop_writable_wait() {
  if (!out_poll_active_) return;
  uv_poll_stop(&out_poll_);
  out_poll_active_ = false;
}

void Connection::on_writable(uv_poll_t* p, int status, int) {
  auto* c = static_cast<Connection*>(p->data);
  if (c->state_ == State::Closing) return;
  if (status < 0) {
    SPDLOG_DEBUG("{}: poll error: {}", c->peer(), uv_strerror(status));
    c->close();
    return;
  }
  if (c->file_fd_ < 0) {
    c->stop_writable_wait();
    return;
  }
  // Level-triggered: the watch stays on while the stream goes on, so a
  // socket that fills again costs no epoll_ctl.
  c->send_more_file();
}

// Sends what the socket takes of the file, then waits for it or moves on.
void Connection::send_more_file() {
  const Pump pump = pump_file(nullptr);
  if (pump == Pump::Failed) {
    close();
    return;
  }
  if (pump == Pump::Pending) {
    arm(server_.options_.send_timeout);
    return;
  }
  file_progressed();
}

// A file that fills the socket is sent in small pieces: each wake-up tops the
// socket up with what the client's ACKs freed, and with TCP_NODELAY every piece
// would leave at once as a short segment (about 20 segments a MiB on loopback
// instead of 16, and more ACKs for the client to send). Corked, the kernel
// sends full segments only; uncorking at the end of the file sends its tail at
// once. nginx does the same with `tcp_nopush`. Two setsockopt per file that
// fills the socket, none for a file that fits.
void Connection::cork(bool on) {
  if (corked_ == on || fd_ < 0) return;
  const int v = on ? 1 : 0;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_CORK, &v, sizeof v);
  corked_ = on;
}

void Connection::finish_file_stream() {
  stop_writable_wait();
  cork(false);
  if (file_fd_ >= 0) {
    ::close(file_fd_);
    answer_bytes_ -= std::min(answer_bytes_, file_remaining_);
    complete(file_remaining_ == 0);
  }
  file_fd_ = -1;
  file_remaining_ = 0;
}

void Connection::on_write(uv_write_t* req, int status) {
  auto* w = static_cast<WriteReq*>(req->data);
  Connection* c = w->conn;
  --c->pending_writes_;
  const bool file_chunk = w->file_chunk;
  const size_t bytes = w->bytes;
  c->release(w);
  if (c->state_ == State::Closing) return;
  if (status < 0) {
    SPDLOG_DEBUG("{}: write error: {}", c->peer(), uv_strerror(status));
    c->close();
    return;
  }
  c->server_.stats_.bytes_sent += bytes;
  if (c->pending_writes_ == 0) {
    // Every write under way is done: the answers coalesced behind them go.
    c->flush_output();
    if (c->state_ == State::Closing) return;
  }
  if (file_chunk && c->file_fd_ >= 0) {
    c->send_more_file();
    return;
  }
  c->file_progressed();
}

// A write completed or a file was sent whole: move on.
void Connection::file_progressed() {
  if (state_ == State::Writing) {
    after_response();
  } else if (state_ == State::Reading && pending_writes_ == 0 && file_fd_ < 0 && !yielded_) {
    // All pipelined answers are out: back to waiting for a request (unless
    // requests wait for the next turn: resume() takes care of them then).
    if (close_after_write_ || peer_eof_) {
      close();
    } else if (!request_started_) {
      arm(server_.options_.idle_timeout);
    }
  }
}

void Connection::on_timer(uv_timer_t* t) {
  auto* c = static_cast<Connection*>(t->data);
  if (c->state_ == State::Closing || c->deadline_ == kNever) return;
  const uint64_t now = uv_now(t->loop);
  if (now < c->deadline_) {
    // The deadline moved since the timer was started: wait for the rest.
    c->timer_due_ = c->deadline_;
    uv_timer_start(&c->timer_, on_timer, c->deadline_ - now, 0);
    return;
  }
  if (c->state_ == State::Reading && c->request_started_ && c->pending_writes_ == 0) {
    SPDLOG_DEBUG("{}: request head not complete in time", c->peer());
    ++c->server_.stats_.errors_total;
    c->send_error(408, "header timeout");
    return;
  }
  SPDLOG_DEBUG("{}: {} timeout", c->peer(),
               c->pending_writes_ > 0 || c->file_fd_ >= 0 ? "send" : "idle");
  c->close();
}

void Connection::reject() {
  keep_alive_ = false;
  close_after_write_ = true;
  state_ = State::Writing;
  WriteReq* w = take_write();
  w->head.assign(kRejectResponse);
  submit_head(w);
  after_response();  // closes at once when the 503 went out whole
  arm(std::chrono::milliseconds(1000));
}

void Connection::drain() {
  if (state_ == State::Closing) return;
  if (idle()) {
    close();
  } else {
    close_after_write_ = true;
  }
}

void Connection::close() {
  if (state_ == State::Closing) return;
  state_ = State::Closing;
  if (yielded_) server_.remove_ready(this);
  backlog(false);
  if (self_) *self_ = nullptr;
  finish_file_stream();
  if (streaming_) complete(false);
  reading_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_close);
  fd_ = -1;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), on_close);
  // Closing the poll handle takes the dup out of epoll; on_close then closes it.
  if (out_fd_ >= 0) uv_close(reinterpret_cast<uv_handle_t*>(&out_poll_), on_close);
  server_.connection_closed(this);
}

void Connection::on_close(uv_handle_t* h) {
  auto* c = static_cast<Connection*>(h->data);
  if (h == reinterpret_cast<uv_handle_t*>(&c->out_poll_)) {
    ::close(c->out_fd_);
    c->out_fd_ = -1;
  }
  if (--c->open_handles_ == 0) delete c;
}

// ------------------------------------------------------------------ Server

Server::Server(uv_loop_t* loop, ServerOptions options, Handler handler)
    : loop_(loop),
      options_(std::move(options)),
      handler_(std::move(handler)),
      shared_connections_(options_.shared_connections) {}

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

int start_listener(uv_tcp_t* tcp, int rc, uv_connection_cb on_connection) {
  if (rc == 0) {
    uv_tcp_nodelay(tcp, 1);
    uv_os_fd_t fd = -1;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(tcp), &fd) == 0) {
      ::setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &kDeferAcceptSeconds,
                   sizeof kDeferAcceptSeconds);
    }
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(tcp), 511, on_connection);
  }
  if (rc != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(tcp),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  }
  return rc;
}

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

// Binds `tcp` for Sharing::First or Join (see server.hpp). SO_REUSEPORT
// alone would let a second daemon of the same user join a port in use, so
// First proves the port free with a plain bind before it shares it.
int bind_shared(uv_tcp_t* tcp, Address addr, bool first) {
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
  const int fd = bound_socket(addr.sa(), true);
  if (fd < 0) return fd;
  const int rc = uv_tcp_open(tcp, fd);
  if (rc != 0) ::close(fd);
  return rc;
}
}  // namespace

int Server::listen(const std::string& address, uint16_t port, Sharing sharing) {
  std::string err;
  auto addr = resolve(address, port, &err);
  if (!addr) return UV_EADDRNOTAVAIL;
  auto* tcp = new uv_tcp_t();
  uv_tcp_init(loop_, tcp);
  tcp->data = this;
  const int bound = sharing == Sharing::None ? uv_tcp_bind(tcp, addr->sa(), 0)
                                             : bind_shared(tcp, *addr, sharing == Sharing::First);
  const int rc = start_listener(tcp, bound, on_connection);
  if (rc == 0) listeners_.push_back(tcp);
  nofile_ = soft_nofile();
  return rc;
}

int Server::adopt(int fd) {
  auto* tcp = new uv_tcp_t();
  uv_tcp_init(loop_, tcp);
  tcp->data = this;
  const int rc = start_listener(tcp, uv_tcp_open(tcp, fd), on_connection);
  if (rc == 0) listeners_.push_back(tcp);
  nofile_ = soft_nofile();
  return rc;
}

uint16_t Server::port() const {
  if (listeners_.empty()) return 0;
  uv_os_fd_t fd = -1;
  if (uv_fileno(reinterpret_cast<const uv_handle_t*>(listeners_.front()), &fd) != 0) return 0;
  return local_port(fd);
}

void Server::set_options(ServerOptions options) {
  options_ = std::move(options);
  common_headers_.clear();  // the Server header may have changed
}

void Server::on_connection(uv_stream_t* listener, int status) {
  auto* s = static_cast<Server*>(listener->data);
  if (status < 0) {
    // EMFILE comes here only when libuv's spare descriptor (with which it
    // accepts and closes what it cannot keep) is gone too; libuv calls
    // again at once, so this is logged once per burst, not once per call.
    const auto said = s->fd_shortage_.failed(std::chrono::steady_clock::now());
    if (said.first) {
      spdlog::warn("accept: {} (further failures are counted, not logged one by one)",
                   uv_strerror(status));
    } else if (said.repeated > 0) {
      spdlog::warn("accept: {} {} more times", uv_strerror(status), said.repeated);
    }
    return;
  }
  if (s->out_of_descriptors(listener)) {
    s->waiting_ = listener;  // left unaccepted: libuv stops polling the listener
    return;
  }
  s->accept_one(listener);
}

// Accepting until accept() fails with EMFILE would have libuv accept and
// close connections (its EMFILE trick) without a word to anyone. Instead,
// when the connection just accepted took the last descriptor, it is left
// unaccepted: libuv stops polling that listener, new clients wait in the
// kernel's backlog, and the next connection of ours to close lets it in
// (nginx disables accept events likewise). Probing costs a dup and a close,
// so only near the limit: each connection may hold a socket and a file.
bool Server::out_of_descriptors(uv_stream_t* listener) {
  constexpr uint64_t kDescriptorsBesideConnections = 64;
  bool full = false;
  // Every worker's connections take descriptors of the one process.
  const uint64_t open =
      shared_connections_ ? shared_connections_->load() : stats_.active_connections.get();
  if (2 * open + kDescriptorsBesideConnections >= nofile_) {
    uv_os_fd_t fd = -1;
    uv_fileno(reinterpret_cast<uv_handle_t*>(listener), &fd);
    const int probe = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    full = probe < 0 && (errno == EMFILE || errno == ENFILE);
    if (probe >= 0) ::close(probe);
  }
  if (!full) {
    if (!fd_shortage_.active()) return false;
    if (const auto waited = fd_shortage_.succeeded(std::chrono::steady_clock::now())) {
      spdlog::info("file descriptors available again ({} more connections had waited)", *waited);
    }
    return false;
  }
  const auto said = fd_shortage_.failed(std::chrono::steady_clock::now());
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

void Server::accept_one(uv_stream_t* listener) {
  auto* c = new Connection(*this);
  c->next_ = connections_;
  if (connections_ != nullptr) connections_->prev_ = c;
  connections_ = c;
  ++stats_.active_connections;
  const uint64_t open =
      shared_connections_ ? shared_connections_->fetch_add(1) + 1 : stats_.active_connections.get();
  if (open > options_.max_connections) {
    // Over the limit: answer 503 rather than leave the client in the backlog.
    ++stats_.rejected_total;
    if (!c->start(listener)) {
      c->close();
      return;
    }
    c->read_stop();
    c->reject();
    return;
  }
  ++stats_.connections_total;
  if (!c->start(listener)) c->close();
}

void Server::connection_closed(Connection* c) {
  if (c->prev_ != nullptr) c->prev_->next_ = c->next_;
  if (c->next_ != nullptr) c->next_->prev_ = c->prev_;
  if (connections_ == c) connections_ = c->next_;
  c->prev_ = c->next_ = nullptr;
  --stats_.active_connections;
  if (shared_connections_) shared_connections_->fetch_sub(1);
  // Its descriptor is free: the connection left waiting may have it.
  if (uv_stream_t* l = std::exchange(waiting_, nullptr)) on_connection(l, 0);
  maybe_drained();
}

void Server::add_ready(Connection* c) {
  if (ready_idle_ == nullptr) {
    ready_idle_ = new uv_idle_t();
    uv_idle_init(loop_, ready_idle_);
    ready_idle_->data = this;
  }
  c->yielded_ = true;
  c->ready_prev_ = nullptr;
  c->ready_next_ = ready_;
  if (ready_ != nullptr) ready_->ready_prev_ = c;
  ready_ = c;
  uv_idle_start(ready_idle_, on_ready);
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
void Server::on_ready(uv_idle_t* idle) {
  auto* s = static_cast<Server*>(idle->data);
  s->resuming_ = s->ready_;
  s->ready_ = nullptr;
  while (Connection* c = s->resuming_) {
    s->remove_ready(c);
    c->resume();
    if (c->state_ == Connection::State::Reading) c->read_start();
  }
  if (s->ready_ == nullptr && s->ready_idle_ != nullptr) uv_idle_stop(s->ready_idle_);
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
  waiting_ = nullptr;  // closing its listener closes the connection left waiting
  on_drained_ = std::move(on_drained);
  for (auto* l : listeners_) {
    uv_close(reinterpret_cast<uv_handle_t*>(l),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  }
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
  waiting_ = nullptr;
  on_drained_ = nullptr;
  uv::close(drained_timer_);
  for (auto* l : listeners_) {
    uv_close(reinterpret_cast<uv_handle_t*>(l),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  }
  listeners_.clear();
  while (connections_ != nullptr) connections_->close();
  if (ready_idle_ != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(ready_idle_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_idle_t*>(h); });
    ready_idle_ = nullptr;
  }
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
