// SPDX-License-Identifier: MIT
// One TLS connection without I/O (as h11 and nghttp2's mem_recv/mem_send):
// the caller hands it the bytes read from the socket (receive), takes the
// plaintext out (read), hands it plaintext to send (write) and takes out the
// bytes to write to the socket (take_output). The handshake runs inside
// receive(); its outcome and every failure are values (state(), error()),
// never exceptions. OpenSSL's SSL sits over a BIO of the engine's own (see
// Wire) that gives back its memory once emptied.
//
// kTLS (a server made with a socket to write to): the write side is a socket
// BIO over that socket instead, so that OpenSSL itself installs the write
// keys in the kernel (setsockopt TLS_TX) at the record where they start; the
// handshake's output then goes straight to the socket (take_output() has
// none) and the read side stays the Wire. After the handshake
// kernel_sends() says whether the kernel took the keys; when it did not,
// stop_direct_writes() makes the Wire the write BIO again and the engine is
// as any other.
// Why a socket BIO rather than taking the keys out and calling setsockopt
// ourselves: OpenSSL 3.0 has no public call for a session's traffic secrets
// or its write sequence number (only the key log callback, and the sequence
// would have to be counted from the records it wrote, tickets included), so
// we would re-implement the TLS 1.2 and 1.3 key schedules against its
// internals; through the socket BIO OpenSSL's own, tested kTLS code does it,
// and refuses cleanly (no kernel keys) for what it or the kernel cannot take.
//
// Ownership: an Engine owns its SSL and keeps the context it was made from
// alive (a reload replaces the daemon's context; connections under way keep
// theirs). Not thread-safe; one per connection, used on its loop.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/tls/context.hpp"

namespace cdn::tls {

class Engine {
 public:
  enum class State : uint8_t {
    Handshaking,  // not yet open: feed it what the peer sends, send what it outputs
    Open,         // application data both ways
    Closed,       // the peer sent close_notify; output may still hold ours
    Failed,       // error() says why; output may hold an alert to send
  };

  // `send_fd` >= 0: kTLS wanted; the handshake writes to that socket (the
  // caller's, not closed here) and OpenSSL may hand its keys to the kernel.
  static Engine server(std::shared_ptr<const ServerContext> context, int send_fd = -1);
  // `host`: sent as SNI (unless an IP literal) and checked against the
  // server's certificate when the context verifies.
  static Engine client(std::shared_ptr<const ClientContext> context, std::string_view host);

  Engine(Engine&&) noexcept;
  Engine& operator=(Engine&&) noexcept;
  ~Engine();

  // Bytes from the peer; drives the handshake. Returns state(). A server
  // holds them until the first record is whole (at most 5 + 2^14 + 2048
  // bytes), then makes its SSL.
  State receive(std::string_view ciphertext);
  // Starts a client's handshake (its ClientHello goes to the output); goes
  // on with a handshake that wants_writable().
  State start();
  // Up to `size` bytes of plaintext; 0 when none is ready (see state()).
  size_t read(char* buffer, size_t size);
  // Encrypts up to all of `plaintext` (Open only); returns the bytes taken.
  // At most one record (16 KiB) per call's worth is buffered ahead by OpenSSL,
  // so output grows by about what is written.
  size_t write(std::string_view plaintext);
  // Whether received bytes wait inside (decrypted or not) for read().
  bool has_buffered_input() const;
  // Queues close_notify.
  void close();
  // Bytes waiting to go to the peer.
  size_t pending_output() const;
  // Appends the bytes waiting to go to the peer to `out`; returns how many.
  // Into an empty `out` they are moved, not copied.
  size_t take_output(std::string& out);

  // kTLS: the handshake could not write to its socket (full); start() again
  // once it is writable.
  bool wants_writable() const { return want_write_; }
  // kTLS: the handshake is over and the kernel holds the write keys: the
  // kernel encrypts whatever is written to the socket from now on (write()
  // must not be used; close() still sends close_notify through it).
  bool kernel_sends() const;
  // kTLS: the kernel did not take the keys; output goes through the Wire
  // again (take_output()), as for any other engine. Only once Open.
  void stop_direct_writes();

  State state() const { return state_; }
  const std::string& error() const;
  bool resumed() const;
  Protocol protocol() const;
  std::string_view server_name() const;  // the client's SNI, on a server
  std::string_view version() const;      // "TLSv1.3"
  std::string_view cipher() const;
  SSL* ssl() const { return ssl_; }  // for tests and logs

 private:
  Engine() = default;
  void init(SSL_CTX* ctx);
  void write_to_socket();
  // A server's SSL is made only once the first TLS record is in whole: a
  // client that connects and stalls, or sends a few bytes, costs the few
  // bytes and not OpenSSL's buffers (tens of KiB).
  // Until then the bytes wait in the Wire's `in`.
  bool first_record_in() const;
  void handshake();
  void fail(int ret);

  // The ciphertext both ways, which the SSL's BIO reads and appends to.
  // Inside the engine (a block of its own would cost an idle connection
  // its own allocation): a move tells the BIO the new address.
  struct Wire {
    std::string in;    // from the peer
    size_t in_at = 0;  // how much of `in` OpenSSL has read
    std::string out;   // to the peer, until take_output()
  };

  friend struct WireAccess;  // the BIO's functions (engine.cc)

  const ServerContext& server_context() const {
    return *static_cast<const ServerContext*>(context_.get());
  }

  SSL* ssl_ = nullptr;
  Wire wire_;
  std::unique_ptr<std::string> error_;  // made when it fails: most never do
  // The context it was made from: a ServerContext, or a ClientContext when
  // client_ (one pointer for either, as an engine is one or the other).
  std::shared_ptr<const void> context_;
  int send_fd_ = -1;  // kTLS: the socket the handshake writes to; -1 once the Wire writes
  bool want_write_ = false;
  bool client_ = false;
  State state_ = State::Handshaking;
};

std::string_view to_string(Engine::State s) noexcept;

}  // namespace cdn::tls
