// SPDX-License-Identifier: MIT
// The transport seam: what carries a connection's bytes between the socket
// and the protocol core (http::ServerConnection behind net::Server, the
// ResponseParser behind net::ClientConnection). The core's adapter talks to
// a Transport and never to the socket, so a layer that changes the bytes (TLS)
// or multiplexes them (an HTTP/2 session) goes between the two without
// touching either (after Node's StreamBase/StreamListener and h2o's socket
// layer).
//
// Glossary and ownership:
// - Transport: one connection's byte stream, owned by its user through a
//   Transport::Ptr. Dropping the Ptr closes it at once (close()): nothing
//   more is read or written, and the user hears nothing more but one
//   on_closed(), on a later loop turn, once libuv has let go of everything the
//   transport was given (the bytes of write units included). The transport
//   frees itself right after on_closed().
// - TransportUser: the layer above (the adapter of a core, or a TLS
//   transport stacked on a TCP one). It must outlive the transport's last
//   callback, on_closed(), and may free itself in it (with the bytes it had
//   handed over).
// - Write unit: bytes the kernel did not take at once and that went on as one
//   asynchronous write. They stay valid and unmoved until their
//   on_write_done(); units complete in order.
// - Plaintext: what the user reads and writes. A TLS transport reads
//   ciphertext below and hands plaintext up, and reports a unit done once
//   its ciphertext went to the kernel.
//
// Calls: a transport calls its user only from its own loop callbacks, never
// from inside a call the user is making into it, so the user may call in
// from anywhere on the loop thread (e.g. a deferred answer). The user's
// callbacks are noexcept: an exception is the user's to catch, log and turn
// into closing this connection only.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>

namespace cdn::net {

class TransportUser {
 public:
  // The transport carries bytes from now on (at once for a plain TCP
  // connection accepted or opened; after connect() or a TLS handshake
  // otherwise), or it cannot (status < 0, a libuv error: refused, timed out,
  // handshake failed); the user then drops it. Before this call the user
  // neither reads nor writes.
  virtual void on_open(int status) noexcept = 0;
  // Bytes from the peer, valid only during the call. At most read_budget()
  // where the transport can keep to it; the user takes whatever comes.
  virtual void on_read(std::string_view data) noexcept = 0;
  // The peer shut its sending side (FIN; for TLS, close_notify): no byte
  // follows, and the user may still write.
  virtual void on_eof() noexcept = 0;
  // The transport broke (reset, read or poll error; status < 0): nothing
  // more can be carried; the user drops it.
  virtual void on_error(int status) noexcept = 0;
  // The oldest write unit completed (status < 0: failed, and the transport
  // is broken).
  virtual void on_write_done(int status) noexcept = 0;
  // A send_file() that answered `wait` may be tried again.
  virtual void on_writable() noexcept = 0;
  // The size of the next read: 0 means "take none now" (the user also turns
  // reading off with set_reading(false)).
  virtual size_t read_budget() const noexcept = 0;
  // The last call: libuv holds nothing of the user's any more; it may free itself.
  virtual void on_closed() noexcept = 0;

 protected:
  ~TransportUser() = default;
};

// How an output plan continues (http::OutputPlan's flags), for a transport
// that can make use of it: a plain TCP one sends with MSG_MORE, so a head
// leaves with the first bytes of its file, and the last answer with the FIN.
struct WriteHints {
  bool more = false;  // more output follows at once
  bool last = false;  // nothing follows; the connection closes cleanly after it
};

// What a transport did with the bytes given to write() or send_file().
struct Handed {
  int error = 0;            // < 0: a libuv error; nothing more is carried, the user drops it
  size_t now = 0;           // bytes taken at once (the kernel has them): no unit
  size_t queued = 0;        // the bytes after those, gone on as one write unit
                            // (on_write_done); of a file: copied into the
                            // transport's own buffer (no sendfile)
  bool wait = false;        // send_file only: nothing taken, the socket is full;
                            // on_writable() (or on_write_done()) says when to try again
  bool file_error = false;  // `error` is the file's (it could not be read), not the peer's
};

class Transport {
 public:
  struct Deleter {
    void operator()(Transport* t) const noexcept { t->close(); }
  };
  using Ptr = std::unique_ptr<Transport, Deleter>;
  static constexpr size_t kMaxWriteBufs = 16;  // buffers of one write()

  // The layer above; set once, before the loop runs again after the
  // transport was made (a TLS transport binds the TCP one below it to itself).
  virtual void bind(TransportUser& user) noexcept = 0;
  // Bytes may be written (see TransportUser::on_open).
  virtual bool open() const noexcept = 0;
  // Reading on (on_read, on_eof, on_error) or off (the kernel's buffers then
  // push back on the peer).
  virtual void set_reading(bool on) noexcept = 0;
  // Hands the buffers over, in order, after everything handed before: `now`
  // + `queued` is all of them, or `error` (the peer is gone, or the
  // transport closed). A failure met later is told by on_write_done(). At
  // most kMaxWriteBufs buffers.
  virtual Handed write(std::span<const std::string_view> bufs, WriteHints hints) noexcept = 0;
  // Sends up to `length` bytes of `fd` from `offset` (the descriptor stays
  // the caller's): some now (sendfile), some copied into one write unit, or
  // nothing yet (`wait`). `error` UV_EOF (with file_error): the file ended
  // before `length`.
  // A plain TCP transport sends it once no write unit is under way (`wait`
  // until then); a TLS one reads it in bounded chunks and encrypts them.
  virtual Handed send_file(int fd, uint64_t offset, uint64_t length, WriteHints hints) noexcept = 0;
  // The peer's socket address; false when the kernel no longer knows it.
  virtual bool peer_address(sockaddr_storage& out) const noexcept = 0;
  // The peer and this end agreed on HTTP/2 (TLS: ALPN chose h2).
  virtual bool h2() const noexcept { return false; }

 protected:
  // Through Ptr only: marks the transport closed at once; see the glossary.
  virtual void close() noexcept = 0;
  virtual ~Transport() = default;
};

// Puts a layer over a transport (a TLS transport over a TCP one): binds the
// one below to itself and returns itself, which the caller binds to its
// user before the loop runs again. Never null: a layer that cannot work
// says so with on_open(status < 0), from a loop callback like any other.
// Used per client connection (ClientConnection::create) and per listener
// (Server::listen and adopt: the [tls] port's, daemon::tls_layer).
using TransportLayer = std::function<Transport::Ptr(Transport::Ptr below)>;

}  // namespace cdn::net
