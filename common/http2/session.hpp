// SPDX-License-Identifier: MIT
// The server side of one HTTP/2 connection, with no I/O in it: nghttp2's
// session driven through nghttp2_session_mem_recv / mem_send (as
// http::ServerConnection is for HTTP/1.1, and after nghttp2's
// examples/libevent-server.c for the glue).
//
// Glossary and ownership:
// - Session: the protocol state of one connection. Its adapter
//   (common/net/h2_link.cc) owns it, hands it the bytes it reads and the loop
//   time, and writes what take_output() returns. It makes no system call
//   but the file reads of file bodies (SessionOptions::read_file, pread by
//   default) and reads no clock: `now` is a monotonic time in milliseconds
//   given by the caller (a fake clock in tests).
// - Stream: one request and its answer, named by its HTTP/2 stream id. The
//   handler is given the request when it is complete (END_STREAM) and
//   answers through the session's calls naming the id, now or later; a call
//   for a stream that is gone changes nothing and answers false.
// - Body: what follows an answer's head, as a queue of pieces (owned bytes,
//   bytes kept alive by an owner, file ranges). nghttp2 asks for DATA as the
//   peer's flow-control windows allow; a file is read then, at most one frame
//   (16 KiB) at a time, so a file body never sits in memory whole.
// - Output: take_output() returns at most max_output bytes of frames; the
//   adapter writes them and says output_done() when the transport has them
//   all (write unit completed), then asks for more.
//
// Bounds and protections: SETTINGS_MAX_CONCURRENT_STREAMS, the header list
// and HPACK table sizes, nghttp2's flow-control windows, a cap on queued
// SETTINGS/PING acknowledgements (max_outbound_ack) and CONTINUATION frames
// per header block (when this nghttp2 has it, CVE-2024-27316), a count of
// the client's RST_STREAMs per second (rapid reset, CVE-2023-44487:
// GOAWAY ENHANCE_YOUR_CALM beyond max_resets_per_second), and timeouts:
// a connection with no stream closes after idle_timeout, a request whose
// head or body does not complete in header_timeout is reset, an answer whose
// body makes no progress (a window never opened) for send_timeout is reset,
// and output the transport does not take within send_timeout closes it.
//
// Re-entrance: the handler may answer from inside on_request or later; the
// session never calls the handler from inside an answering call. Nothing
// here deletes anything the adapter owns; closed() says when to close.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/http/connection.hpp"
#include "common/http/message.hpp"
#include "common/http/parser.hpp"

struct nghttp2_session;

namespace cdn::http2 {

// The client connection preface (RFC 9113 3.4): an h2c client with prior
// knowledge starts with it.
inline constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct SessionOptions {
  uint32_t max_concurrent_streams = 100;
  // Request header list (names and values, as SETTINGS_MAX_HEADER_LIST_SIZE
  // counts them) and HPACK dynamic table: from the [server] header limits.
  http::Limits limits;
  uint32_t header_table_size = 4096;
  std::chrono::milliseconds header_timeout{10'000};  // a stream's request head and body
  std::chrono::milliseconds idle_timeout{60'000};    // no stream open
  std::chrono::milliseconds send_timeout{60'000};    // output or a stream's body without progress
  uint32_t max_resets_per_second = 200;              // client RST_STREAMs; beyond: GOAWAY
  size_t max_outbound_ack = 1000;                    // SETTINGS/PING ACKs queued
  size_t max_continuations = 8;                      // CONTINUATION frames per header block
  size_t max_output = 64 * 1024;                     // bytes per take_output()
  size_t max_stream_queue = 64 * 1024;               // bytes a streamed answer queues
  // Reads up to `n` bytes of `fd` at `offset` into `buf`: bytes read, 0 at
  // the end of the file, < 0 on error. Default: pread.
  std::function<long(int fd, uint64_t offset, uint8_t* buf, size_t n)> read_file;
};

struct SessionStats {
  uint64_t streams = 0;            // requests handed to the handler
  uint64_t resets_received = 0;    // RST_STREAM from the client
  uint64_t streams_timed_out = 0;  // reset by the session (header or send timeout)
  bool calmed = false;             // GOAWAY ENHANCE_YOUR_CALM sent
};

class SessionHandler {
 public:
  virtual ~SessionHandler() = default;
  // Stream `id`'s request, complete; `req` stays valid until on_stream_closed.
  virtual void on_request(int32_t id, const http::Request& req) = 0;
  // Stream `id` is gone: its answer went out whole (`whole`), or it was reset
  // or the connection closed first. Called for every stream on_request was.
  virtual void on_stream_closed(int32_t id, bool whole, uint64_t body_bytes) = 0;
  // A streamed answer's queue emptied: it may take pieces again.
  virtual void on_stream_writable(int32_t /*id*/) {}
};

// A file range of a body (`owner` keeps the descriptor open): the HTTP/1.1
// core's.
using FileRange = http::FileRange;

class Session {
 public:
  static constexpr uint64_t kNoDeadline = UINT64_MAX;

  Session(SessionHandler& handler, SessionOptions options, uint64_t now);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // ---------------------------------------------------- transport -> session
  // Bytes from the client (the preface first). Requests completed by them go
  // to the handler from inside this call.
  void receive(std::string_view data, uint64_t now);
  // The client shut its side: no stream may start; what is open is answered.
  void receive_eof(uint64_t now);
  // The transport failed: closed at once, nothing more is sent.
  void abort();
  // Graceful stop: GOAWAY now; closed once the open streams are answered.
  void drain(uint64_t now);
  void tick(uint64_t now);
  uint64_t next_deadline() const;

  // ---------------------------------------------------- output
  // Frames to send, at most about max_output bytes; empty when none are due
  // or output is under way (taken and not yet output_done()).
  std::string take_output(uint64_t now);
  // The transport took all of the last take_output() (its unit completed):
  // `buf` comes back for reuse.
  void output_done(std::string buf, uint64_t now);
  bool writing() const { return writing_; }
  // Closed at once (abort(), a fatal error, a client that took nothing): the
  // adapter closes the transport without waiting for the output under way.
  bool aborted() const { return aborted_; }
  // Nothing more will be read or sent: the adapter closes the transport once
  // the output taken is done.
  bool closed() const;

  // ---------------------------------------------------- handler -> session
  // `lines`: header lines "Name: value\r\n" as http::HeadWriter writes them
  // (connection-specific ones are dropped, names lower-cased).
  // An interim (1xx) answer, before the final one.
  bool interim(int32_t id, int status, std::string_view lines);
  // The answer with a body of bytes (copied unless `owner` keeps them), or
  // none for HEAD (`head_only`: END_STREAM with the head).
  bool respond(int32_t id, int status, std::string_view lines, std::string_view body,
               std::shared_ptr<const void> owner, bool head_only);
  bool respond_file(int32_t id, int status, std::string_view lines, FileRange file);
  // A body in pieces over time: push_piece / push_file / end_body.
  bool respond_stream(int32_t id, int status, std::string_view lines);
  // False when the stream has more than max_stream_queue bytes queued (the
  // client does not read), or is gone.
  bool push_piece(int32_t id, std::string_view piece);
  bool push_file(int32_t id, FileRange file);
  bool end_body(int32_t id);
  // The stream's queued pieces are all sent.
  bool stream_ready(int32_t id) const;
  // RST_STREAM (INTERNAL_ERROR): the answer cannot be completed.
  void reset(int32_t id);
  bool has_stream(int32_t id) const { return streams_.count(id) != 0; }
  size_t open_streams() const { return streams_.size(); }
  const SessionStats& stats() const { return stats_; }
  bool draining() const { return draining_; }

 private:
  struct Piece {
    std::string own;
    std::string_view view;
    std::shared_ptr<const void> owner;
    FileRange file;  // file.fd >= 0: a file range
    size_t skip = 0;
    size_t left() const { return file.fd >= 0 ? file.length : view.size() - skip; }
  };
  struct Stream {
    int32_t id = 0;
    http::Request req;
    size_t header_bytes = 0;
    bool handed = false;     // on_request was called
    bool answered = false;   // a final head was submitted
    bool body_done = false;  // no piece follows those queued
    bool deferred = false;   // nghttp2 was told NGHTTP2_ERR_DEFERRED
    bool too_big = false;    // the request exceeded a limit: answered by the session
    uint64_t opened_at = 0;
    uint64_t progress_at = 0;  // last DATA sent for it (or its answer's start)
    uint64_t body_bytes = 0;   // DATA payload sent
    size_t queued = 0;         // bytes of pieces (files not counted)
    std::deque<Piece> pieces;
  };
  friend struct Callbacks;

  Stream* find(int32_t id);
  const Stream* find(int32_t id) const;
  bool submit(Stream& s, int status, std::string_view lines, bool with_body);
  void queue(Stream& s, Piece p);
  void wake(Stream& s);
  void error_answer(Stream& s, int status);
  void fatal();
  long read_body(Stream& s, uint8_t* buf, size_t length, uint32_t* flags);
  void stream_closed(int32_t id, uint32_t code);

  SessionHandler& handler_;
  SessionOptions options_;
  nghttp2_session* ng_ = nullptr;
  std::map<int32_t, std::unique_ptr<Stream>> streams_;
  SessionStats stats_;
  uint64_t now_;
  uint64_t idle_since_;
  uint64_t writing_since_ = 0;
  uint64_t reset_window_start_ = 0;
  uint32_t resets_in_window_ = 0;
  std::string spare_;      // a buffer to fill next
  bool writing_ = false;   // output taken, not done
  bool aborted_ = false;   // closed at once
  bool draining_ = false;  // GOAWAY sent by us
  bool peer_goaway_ = false;
  bool eof_ = false;
  bool failed_ = false;  // nghttp2 refused the input: the rest is ignored
  int in_recv_ = 0;      // inside mem_recv: answers wait for it to return
};

}  // namespace cdn::http2
