// SPDX-License-Identifier: MIT
// The server side of one HTTP/1.1 connection, with no I/O in it (after h11's
// "bring your own I/O" and nghttp2's mem_recv/mem_send sessions).
//
// Glossary and ownership:
// - ServerConnection: the protocol state of one connection. The transport
//   adapter (common/net/server.cc over a socket, later TLS) owns it, hands it
//   the bytes it reads and the loop time, and carries out its output plan. It
//   makes no system call and reads no clock: `now` is a monotonic time in
//   milliseconds given by the caller (a fake clock in tests).
// - Request sequence: requests on a connection are numbered 1, 2, ... in the
//   order they arrived. The handler is given the number with the request and
//   every answering call names it: a call for any other number (a late answer
//   for an earlier request, an answer after the connection closed) is refused
//   and changes nothing. One request at a time is with the handler; requests
//   pipelined behind it wait, already read, in the connection's input.
// - Output: the answers, in order, as a queue of pieces (owned bytes, bytes
//   kept alive by an owner, file ranges). plan() shows the adapter what to
//   send next; advance() tells what the kernel took at once and what went on
//   as one asynchronous write (a "write unit"); write_done() completes the
//   oldest unit. Pieces of a unit stay alive (and unmoved) until it is done.
//
// Bounds, for a client that sends requests faster than it reads the answers:
// at most max_input bytes read and not yet parsed (read_budget() is 0 past
// it), answers stop being taken once the output holds max_output bytes not
// yet handed over, max_writes units or max_queued bytes in flight, or a file
// still to send (output_full()), and at most max_answers_per_turn requests are
// answered per receive()/resume() before the adapter lets the loop serve the
// other connections (wants_resume() with turn_spent()).
//
// Transport seam: the core sees plain bytes only. A TLS layer sits between
// socket and core as a transport of its own: what it decrypts goes to
// receive(), and it encrypts the Bytes plans; a File plan it cannot send with
// kTLS it reads into its own buffer and reports as handed (advance(0, n)),
// the same path as the pread fallback of a socket without sendfile.
//
// Re-entrance: the handler may answer from inside on_request (the common
// case) or later from anywhere on the connection's thread. An answer given
// later never runs the handler again from inside that call: requests left
// waiting are taken by the adapter's next resume() (wants_resume()). Nothing
// here deletes anything the adapter owns; closed() says when to close.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/http/message.hpp"
#include "common/http/parser.hpp"
#include "common/http/serialize.hpp"
#include "common/metrics/counter.hpp"

namespace cdn::http {

namespace detail {
// A queue of at most N elements in one block, taken at the first push (a
// connection that never answers, such as an idle TLS one, holds none): an
// element never moves while it is queued (its bytes may be in a write under
// way). Popped slots keep what they own (string capacity) for the next push.
template <typename T, size_t N>
class Ring {
 public:
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  bool full() const { return n_ == N; }
  T& operator[](size_t i) { return (*a_)[(first_ + i) % N]; }
  const T& operator[](size_t i) const { return (*a_)[(first_ + i) % N]; }
  T& front() { return (*a_)[first_]; }
  T& back() { return (*this)[n_ - 1]; }
  // The caller checks full() first.
  T& push_back() {
    if (!a_) a_ = std::make_unique<std::array<T, N>>();
    return (*this)[n_++];
  }
  void pop_front() {
    first_ = (first_ + 1) % N;
    // Empty: start again at the first slot, whose buffers are warm (most
    // connections never hold more than one or two pieces).
    if (--n_ == 0) first_ = 0;
  }
  void pop_back() { --n_; }

 private:
  std::unique_ptr<std::array<T, N>> a_;
  size_t first_ = 0;
  size_t n_ = 0;
};
}  // namespace detail

struct ConnectionOptions {
  std::chrono::milliseconds header_timeout{10'000};  // first byte of a head to its end
  std::chrono::milliseconds idle_timeout{60'000};    // between requests
  std::chrono::milliseconds send_timeout{60'000};    // output waiting without progress
  Limits limits;
  uint64_t max_requests = 0;        // requests per connection (keep-alive limit); 0: no limit
  size_t max_input = 16 * 1024;     // bytes read and not parsed yet
  size_t max_output = 8 * 1024;     // answer bytes not handed to the transport yet
  unsigned max_writes = 16;         // write units in flight
  size_t max_queued = 1024 * 1024;  // bytes in flight
  unsigned max_answers_per_turn = 32;
};

// Counters the adapter may share between the connections of a server.
// Written by the connections' thread; read from any (see metrics::OwnCounter).
struct ConnectionStats {
  metrics::OwnCounter requests_total = 0;
  metrics::OwnCounter errors_total = 0;  // requests answered 4xx by the connection itself
  metrics::OwnCounter bytes_sent = 0;    // completed by the transport (sent, or a write unit done)
};

class ConnectionHandler {
 public:
  virtual ~ConnectionHandler() = default;
  // Request number `seq`, complete. `req` stays valid until it is answered
  // (or the connection closed). Answer through the connection's calls bound
  // to `seq`, now or later.
  virtual void on_request(uint64_t seq, const Request& req) = 0;
  // Header lines every response starts with ("Date: ...\r\nServer: ...\r\n").
  virtual std::string_view common_headers() = 0;
  // The connection answers `status` itself (400, 408, 413, 417, 431...) and
  // closes after it; request() holds what of the request was parsed (the
  // method is empty when the request line did not parse). For access logs.
  virtual void on_error_answer(int /*status*/) {}
};

// Part of a file to send. `owner` keeps the descriptor open: the adapter's
// object whose destructor closes it (the core never closes anything itself).
struct FileRange {
  int fd = -1;
  uint64_t offset = 0;
  uint64_t length = 0;
  std::shared_ptr<const void> owner;
};

// What the adapter sends next.
struct OutputPlan {
  enum class Kind : uint8_t { None, Bytes, File };
  static constexpr size_t kMaxBufs = 16;
  Kind kind = Kind::None;
  // Bytes: buffers in order (a writev); all of them are to be handed over.
  std::array<std::string_view, kMaxBufs> bufs{};
  size_t nbufs = 0;
  size_t bytes = 0;
  // File: `length` bytes of `fd` from `offset` (sendfile).
  int fd = -1;
  uint64_t offset = 0;
  uint64_t length = 0;
  // More output follows this plan at once (e.g. a file after its head: MSG_MORE).
  bool more = false;
  // Nothing follows, and the connection closes cleanly after it (the client
  // asked to close, nothing unread): the data may wait for the FIN (MSG_MORE).
  bool last = false;
};

class ServerConnection {
 public:
  // Closing: no further request is taken; the output is sent, then Closed.
  enum class State : uint8_t {
    Idle,       // waiting for the next request; no byte of it yet
    Head,       // part of a request arrived (header timeout runs)
    Handling,   // request `seq()` is with the handler, no answer begun
    Answering,  // its head is being built (begin() was called)
    Streaming,  // its head is out, chunked pieces follow until end_stream()
    Closing,
    Closed,  // the adapter closes the transport (and keeps this object until
             // the write units under way are done or cancelled)
  };
  static constexpr uint64_t kNoDeadline = UINT64_MAX;

  ServerConnection(ConnectionHandler& handler, const ConnectionOptions& options, uint64_t now,
                   ConnectionStats* stats = nullptr);
  ServerConnection(const ServerConnection&) = delete;
  ServerConnection& operator=(const ServerConnection&) = delete;

  // ---------------------------------------------------- transport -> core
  // How many bytes to read now; 0: do not read (bounds, closing, or input waits).
  size_t read_budget() const;
  // Bytes read from the client. Starts a new turn of answers.
  void receive(std::string_view data, uint64_t now);
  // The client shut its side down: what it sent completely is still answered.
  void receive_eof(uint64_t now);
  // Requests are waiting in the input and may be taken now.
  bool wants_resume() const;
  // This turn answered its share: resume on the loop's next turn, not now.
  bool turn_spent() const { return turn_ >= options_.max_answers_per_turn; }
  // Takes waiting requests: resume() in a new turn, proceed() in the current one.
  void resume(uint64_t now);
  void proceed(uint64_t now);
  // The transport failed or the client is gone: Closed at once, nothing
  // more is sent, no request is answered any more.
  void abort();
  // Graceful stop: closes now when idle, else after the answer under way.
  void drain(uint64_t now);
  // Over the connection limit: send `response` (a complete answer) and close.
  void refuse(std::string_view response);
  // Header, idle and send timeouts; call at next_deadline() (or later).
  void tick(uint64_t now);
  uint64_t next_deadline() const;

  // ---------------------------------------------------- output
  OutputPlan plan() const;
  // Of the last plan, `sent` bytes were taken by the kernel at once, and the
  // next `handed` bytes went on as one write unit (for Bytes, all the rest
  // of the plan; for File, bytes the adapter copied into a buffer of its own).
  void advance(size_t sent, size_t handed, uint64_t now);
  // The oldest write unit completed (also when cancelled after a close).
  void write_done(uint64_t now);
  bool output_full() const;
  // Waiting for the client to take its answers before taking another request
  // (the client sends faster than it reads); a file being sent does not count.
  bool backlogged() const {
    return (state_ == State::Idle || state_ == State::Head) && w_ && w_->files == 0 &&
           output_full();
  }
  // Bytes not yet completed by the transport (files not counted).
  size_t queued() const { return w_ ? w_->unhanded_bytes + w_->inflight_bytes : 0; }
  size_t write_units() const { return w_ ? w_->units.size() : 0; }
  bool has_output() const { return w_ && w_->out.size() > w_->inflight_items; }
  // Pieces of output a connection holds at most (in flight and not): the
  // queue lives inside the connection, so an answer allocates nothing for it.
  static constexpr size_t kMaxPieces = 16;

  // ---------------------------------------------------- handler -> core
  // Each answering call returns false (null) and does nothing when `seq` is
  // not the request being answered or the call does not fit where the answer
  // is (begin twice, a piece without a stream...).
  //
  // Starts the answer: status line, the common headers and, when this is the
  // connection's last answer, "Connection: close". Add headers, then one
  // finish*() or start_stream().
  // `relayed`: a gateway's answer from upstream, which brings its own Date
  // and Server: the common headers are left out.
  HeadWriter* begin(uint64_t seq, int status, bool relayed = false);
  // An interim response (1xx, RFC 9110 15.2) ahead of the answer, before
  // begin(): e.g. a relayed 103 Early Hints. Refused for HTTP/1.0 clients
  // (they know no 1xx) and once the answer has begun.
  bool interim(uint64_t seq, int status, const std::vector<Header>& headers);
  // Ends the head, then `body` (dropped for HEAD, whose Content-Length still
  // describes it): copied, unless `owner` keeps it alive until sent.
  bool finish(uint64_t seq, std::string_view body = {}, std::shared_ptr<const void> owner = {});
  // Ends the head, then the file range (dropped for HEAD).
  bool finish_file(uint64_t seq, FileRange file);
  // Ends the head with "Transfer-Encoding: chunked"; pieces follow. For HEAD
  // the answer ends with the head. `chunked` false: the caller put a
  // Content-Length in the head and the pieces are the body as they are
  // (also for HTTP/1.0 clients); the caller sends exactly that many bytes.
  bool start_stream(uint64_t seq, bool chunked = true);
  // One chunk. False also when output is still queued (the client does not
  // read): the caller ends the stream rather than queue without bound.
  bool send_piece(uint64_t seq, std::string_view piece);
  // A stream can take a file piece now: everything before it was handed to
  // the transport. A streamer waits for this (the adapter tells it) instead
  // of queueing: a slow client holds no body bytes in memory.
  bool stream_ready() const;
  // One piece of the body from a file (sent with sendfile); false when not
  // stream_ready(). Chunked streams frame it as one chunk.
  bool send_file_piece(uint64_t seq, FileRange file);
  bool end_stream(uint64_t seq);
  // A short text answer (status, text/plain, the text and a newline).
  bool reply(uint64_t seq, int status, std::string_view text);
  // The handler failed: a begun head is dropped and `status` answered, and the
  // connection closes after it; a stream under way is cut (the client sees a
  // truncated chunked body).
  bool fail(uint64_t seq, int status);

  bool is_current(uint64_t seq) const {
    return seq == seq_ &&
           (state_ == State::Handling || state_ == State::Answering || state_ == State::Streaming);
  }
  uint64_t seq() const { return seq_; }
  // The request being answered (an empty one before the first request).
  const Request& request() const;
  bool is_head() const { return request().method == "HEAD"; }
  State state() const { return state_; }
  bool closed() const { return state_ == State::Closed; }
  bool draining() const { return draining_; }

 private:
  // One piece of output. Never moved once queued (see detail::Ring), so the
  // bytes of a unit in flight stay put.
  struct Item {
    std::string own;                    // owned bytes (heads, copied bodies, small answers)
    std::string_view view;              // or bytes kept alive by owner
    std::shared_ptr<const void> owner;  // of view, or of fd
    int fd = -1;                        // or a file range: fd >= 0
    uint64_t offset = 0;
    uint64_t length = 0;       // file bytes not handed over yet
    size_t skip = 0;           // bytes already handed over (the first unhanded item only)
    bool coalescable = false;  // owned, and later small answers may be appended
    bool is_file() const { return fd >= 0; }
    bool done() const { return is_file() ? length == 0 : skip == bytes().size(); }
    std::string_view bytes() const { return view.data() != nullptr ? view : std::string_view(own); }
  };
  struct Unit {
    size_t bytes = 0;
    size_t items = 0;  // front items of Work::out it completes
  };
  // How the connection ends once in Closing: a clean end lets the last data
  // wait for the FIN; after an error the client's unread bytes make the close
  // an RST, so the answer goes out at once.
  enum class Ending : uint8_t { Clean, Error };

  // The input after the request being answered: Work::rest inside process(), Work::in after it.
  size_t input_after() const {
    if (!w_) return 0;
    return depth_ > 0 ? w_->rest : w_->in.size();
  }
  size_t process(std::string_view input);
  void process_input();
  void keep_input(std::string_view data);
  void settle();
  void start_request();
  // Sends 100 Continue or refuses the expectation; false when refused.
  bool check_expect(bool headers_only);
  void error_answer(int status);
  void close_after_output(Ending ending);
  void complete_answer();
  // Queues a copy of `bytes`.
  void push_owned(std::string_view bytes, bool coalescable);
  void push_head();
  // Counts `bytes` in: appended to the last piece (null), or the new piece
  // to hold them (null too when the connection had to be aborted).
  Item* push_bytes(std::string_view bytes, bool coalescable);
  void push_view(std::string_view bytes, std::shared_ptr<const void> owner);
  void push_file(FileRange file);
  // A free slot at the back of Work::out, or null (then the connection is aborted).
  Item* new_item();
  void note_output_start();
  // Marks up to n bytes of `it` handed over; returns how many.
  size_t take(Item& it, size_t n);
  void release_front();
  void write_text_answer(std::string& out, int status, std::string_view text, bool with_body);

  ConnectionHandler& handler_;
  const ConnectionOptions& options_;  // the adapter's, outliving the connection
  ConnectionStats* stats_;
  State state_ = State::Idle;
  Ending ending_ = Ending::Clean;
  bool keep_alive_ = true;  // of the answer under way
  bool chunked_ = true;     // of the stream under way
  bool eof_ = false;        // the client shut its side
  bool draining_ = false;
  bool continued_ = false;  // the request being read (seq_ + 1) was sent 100 Continue
  unsigned turn_ = 0;       // requests answered in this turn
  int depth_ = 0;           // process() frames (settle() only at the outermost)
  uint64_t now_;
  uint64_t seq_ = 0;          // the latest request taken
  uint64_t idle_since_;       // Idle: since when (the idle timeout counts from it)
  uint64_t progress_at_ = 0;  // output: last progress, or its start

  // What serving requests takes: made with the first bytes read (or a
  // refusal) and kept for the requests that follow. An idle connection that
  // never asks anything (a client's spare, a browser's preconnect, an idle
  // TLS connection) holds none of it.
  struct Work {
    explicit Work(const Limits& limits) : parser(limits) {}
    RequestParser parser;
    std::string in;    // bytes read and not parsed yet
    std::string head;  // the head being built; also scratch for the connection's own answers
    std::optional<HeadWriter> writer;
    detail::Ring<Item, kMaxPieces> out;
    size_t inflight_items = 0;             // front items of out in units under way
    detail::Ring<Unit, kMaxPieces> units;  // a unit holds at least one piece, or file bytes
    size_t unhanded_bytes = 0;             // byte items not handed over (files not counted)
    size_t inflight_bytes = 0;
    size_t files = 0;         // file items not fully sent
    uint64_t head_since = 0;  // Head: first byte of the request
    size_t rest = 0;          // bytes left after the request being handled, in process()
  };
  std::unique_ptr<Work> w_;
};

}  // namespace cdn::http
