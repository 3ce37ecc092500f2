// SPDX-License-Identifier: MIT
// The TLS transport: a Transport to the layer above (the HTTP core's
// adapter) and the TransportUser of the TCP transport below it (bind()).
// Ciphertext read below goes through a tls::Engine and comes up as
// plaintext; a write is encrypted at once and written below, and its unit
// (if the kernel did not take it all) completes when the ciphertext unit
// does; send_file() reads at most kFileChunk of the file, encrypts it and
// answers it queued. The handshake runs before on_open(0), bounded by its own
// timer; a failed or timed-out one is on_open(status < 0).
//
// kTLS (a server made with `ktls`, over a TCP transport): the handshake
// writes straight to the socket through OpenSSL, which installs the write
// keys in the kernel where it and the kernel can (see tls/engine.hpp for why
// this way). When the kernel took them, the connection is a plain TCP one
// for writing: write() hands plaintext below, send_file() is the TCP
// transport's sendfile, and the kernel makes the records; reading still
// goes through the engine. When it did not, the connection goes on as
// above. tls/ktls.hpp holds the decisions, unit-tested; the kernel path
// itself runs only where the kernel has the tls ULP.
//
// Ownership: the Ptr made by server()/client() owns the TLS transport, which
// owns the TCP transport below. Dropping the Ptr drops the one below; its
// on_closed() frees this, after calling the user's on_closed(). The timer is
// a uv::Ptr handle, freed by its own close callback.
#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/net/transport.hpp"
#include "common/tls/engine.hpp"
#include "common/tls/ktls.hpp"
#include "common/uv/handle.hpp"

namespace cdn::net {

class TcpTransport;

class TlsTransport final : public Transport, private TransportUser {
 public:
  // File bodies are encrypted this much at a time, and at most two such
  // chunks are under way per connection.
  static constexpr size_t kFileChunk = 64 * 1024;

  // Over an accepted (open) TCP transport: reads at once, whatever the user
  // asks, until the handshake is over. `ktls`: offer the session to the
  // kernel (the process's probe said it has the tls ULP); ignored over
  // anything but a TcpTransport.
  static Ptr server(uv_loop_t* loop, Ptr below, std::shared_ptr<const tls::ServerContext> context,
                    std::chrono::milliseconds handshake_timeout, bool ktls = false);
  // Over a TCP transport from TcpTransport::connect() (made with any user:
  // this binds itself to it before the loop runs again) or one already open.
  // The ClientHello goes once the one below is open; `host` is sent as SNI
  // and verified against the certificate when the context verifies.
  // `on_failure` hears why a handshake failed ("certificate verify failed",
  // "hostname mismatch"...), just before the user's on_open(status < 0).
  static Ptr client(uv_loop_t* loop, Ptr below, std::shared_ptr<const tls::ClientContext> context,
                    std::string_view host, std::chrono::milliseconds handshake_timeout,
                    std::function<void(const std::string&)> on_failure = {});

  void bind(TransportUser& user) noexcept override { user_ = &user; }
  bool open() const noexcept override { return open_ && !closing_; }
  void set_reading(bool on) noexcept override;
  Handed write(std::span<const std::string_view> bufs, WriteHints hints) noexcept override;
  Handed send_file(int fd, uint64_t offset, uint64_t length, WriteHints hints) noexcept override;
  bool peer_address(sockaddr_storage& out) const noexcept override;
  bool h2() const noexcept override { return engine_.protocol() == tls::Protocol::H2; }

  const tls::Engine& engine() const { return engine_; }
  // Why the handshake failed ("" while none did).
  const std::string& failure() const;

  // Whether the kernel writes this connection's records (kTLS).
  bool kernel_tls() const { return kernel_; }

  // What kTLS needs, asked once at start: whether OpenSSL was built with it
  // and whether the kernel accepts setsockopt(TCP_ULP, "tls") on a connected
  // loopback TCP socket (the ULP takes only established TCP sockets; the
  // kernel may load its module for it).
  static tls::KtlsProbe probe_ktls();

  // Server connections of the process, any thread (for the metrics).
  struct KtlsCounts {
    std::atomic<uint64_t> kernel_open{0};   // open, their records written by the kernel
    std::atomic<uint64_t> kernel_total{0};  // handshakes after which the kernel took the keys
    std::atomic<uint64_t> user_total{0};    // handshakes after which records are encrypted here
  };
  static KtlsCounts& ktls_counts();

 private:
  TlsTransport(uv_loop_t* loop, Ptr below, tls::Engine engine);
  ~TlsTransport() = default;
  void close() noexcept override;
  // The handshake's deadline, or (open) a kick to deliver() on the loop's
  // next turn; the timer is made on first use.
  void start_timer(std::chrono::milliseconds timeout);

  // From the TCP transport below.
  void on_open(int status) noexcept override;
  void on_read(std::string_view data) noexcept override;
  void on_eof() noexcept override;
  void on_error(int status) noexcept override;
  void on_write_done(int status) noexcept override;
  void on_writable() noexcept override;
  size_t read_budget() const noexcept override;
  void on_closed() noexcept override;

  // Writes what the engine has for the peer below; `user_unit`: the unit
  // (if any) completes a write of the user's. Returns what below did.
  Handed flush(bool user_unit, WriteHints hints);
  void handshake_progress();
  // The handshake is over: the kernel writes the records, or we do.
  void choose_write_path();
  // kTLS: close_notify once nothing is under way below, or owed till then.
  void kernel_close_notify();
  Handed kernel_passed(Handed h, bool last_done);
  void handshake_failed(int status, std::string why);
  // Hands plaintext up while the user takes it; then the end, if it came.
  void deliver();
  void update_reading();

  struct Unit {
    std::string bytes;  // ciphertext below holds until its on_write_done
    bool user = false;  // completes a unit of the user's
    std::unique_ptr<Unit> next;
  };
  // Whether fewer than kMaxUnits units are under way below.
  bool units_below_max() const;
  // kTLS: the TCP transport below while the handshake may write to its socket.
  TcpTransport* handshake_socket() const;

  uv_loop_t* loop_;
  Ptr below_;
  tls::Engine engine_;
  TransportUser* user_ = nullptr;
  uv::Ptr<uv_timer_t> timer_;  // see start_timer()
  // Ciphertext units under way below, oldest first, and the newest. Linked:
  // a unit stays where it is made, and an idle connection holds none and
  // two pointers for them (a deque keeps a block of half a KiB from its
  // birth, a std::list three words).
  std::unique_ptr<Unit> units_;
  Unit* last_unit_ = nullptr;
  // Why the handshake failed, and whom to tell (a client's): made when
  // either is needed, as most server connections need neither.
  struct Failure {
    std::string why;
    std::function<void(const std::string&)> tell;
  };
  std::unique_ptr<Failure> failure_;
  bool open_ = false;
  bool closing_ = false;
  bool user_reading_ = false;
  bool eof_below_ = false;   // the TCP stream ended
  bool eof_told_ = false;    // on_eof() went up
  bool waiting_ = false;     // a send_file answered wait: on_writable() is owed
  bool delivering_ = false;  // inside deliver(): no nested call
  // kTLS. tcp_: below is a TCP transport and the handshake may write to
  // its socket (handshake_socket()); kernel_: the kernel took the keys
  // (below carries plaintext from then on); below_units_: units under way
  // below then; close_notify_owed_: sent once they are all done.
  bool tcp_ = false;
  bool server_side_ = false;
  bool kernel_ = false;
  bool watching_ = false;  // the TCP transport's writable watch is on for the handshake
  bool close_notify_owed_ = false;
  unsigned below_units_ = 0;
};

}  // namespace cdn::net
