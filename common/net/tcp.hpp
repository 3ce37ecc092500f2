// SPDX-License-Identifier: MIT
// The plain TCP transport (transport.hpp): a libuv TCP stream, written to
// straight from the caller when nothing is queued (try_write, sendmsg with
// MSG_MORE, send), the rest through uv_write; files with sendfile(2), corked
// while the socket is full and woken by a writable poll.
//
// Ownership: made by accept(), connect() or adopt() as a Transport::Ptr. The
// transport is its TCP handle's heap object (common/uv/handle.hpp: one
// allocation for both), freed by that handle's close callback right after
// the user's on_closed(): every write callback (cancelled by the close) has
// run by then. Its writable poll is a uv::Ptr of its own.
#pragma once

#include <uv.h>

#include <memory>

#include "common/net/address.hpp"
#include "common/net/transport.hpp"
#include "common/uv/handle.hpp"

namespace cdn::net {

class TcpTransport final : public Transport, private uv::HandleBase<uv_tcp_t> {
 public:
  // Accepts the connection waiting on `listener` (TCP_NODELAY comes from the
  // listener). Open at once. Null when that fails (*err says why).
  static Ptr accept(uv_stream_t* listener, int* err = nullptr);
  // Connects to `to` with TCP_NODELAY; on_open(status) tells the outcome.
  // Null when the attempt cannot even start (*err says why).
  static Ptr connect(uv_loop_t* loop, const Address& to, TransportUser& user, int* err = nullptr);
  // A connected stream socket of the caller's (tests: one end of a
  // socketpair); the transport closes it. Open at once.
  static Ptr adopt(uv_loop_t* loop, int fd, int* err = nullptr);

  void bind(TransportUser& user) noexcept override { user_ = &user; }
  bool open() const noexcept override { return open_ && !closing_; }
  void set_reading(bool on) noexcept override;
  Handed write(std::span<const std::string_view> bufs, WriteHints hints) noexcept override;
  Handed send_file(int fd, uint64_t offset, uint64_t length, WriteHints hints) noexcept override;
  bool peer_address(sockaddr_storage& out) const noexcept override;

  // For a TLS layer that hands its session to the kernel (kTLS): the socket,
  // -1 once closed. Whatever is written to it directly must not overtake a
  // unit under way (the TLS layer writes to it only before its first unit).
  int socket() const noexcept { return fd_; }
  // The writable watch, for such a layer's handshake that found the socket
  // full: on_writable() while on (level-triggered: turn it off when done).
  // False when it cannot be watched.
  bool watch_writable(bool on) noexcept;

 private:
  // One uv_write under way: a write unit.
  struct WriteReq {
    uv_write_t req{};
    TcpTransport* owner = nullptr;
    WriteReq* next_free = nullptr;
  };
  TcpTransport();
  ~TcpTransport() override;
  void close() noexcept override;
  void closed() noexcept override;
  // Made with its handle; null (and *err set) when libuv refuses it.
  static TcpTransport* make(uv_loop_t* loop, int* err);
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&raw); }
  void opened();
  WriteReq* take_write();
  void release(WriteReq* w);
  int queue(const uv_buf_t* bufs, unsigned n);
  bool wait_writable();
  void file_done();
  void cork(bool on);

  static void on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) noexcept;
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept;
  static void on_write(uv_write_t* req, int status) noexcept;
  static void on_connect(uv_connect_t* req, int status) noexcept;

  TransportUser* user_ = nullptr;
  uv::Ptr<uv_poll_t> out_poll_;  // the writable watch for sendfile, on a dup of the socket
  int fd_ = -1;                  // the socket, for send/sendfile; -1 once closed
  unsigned units_ = 0;
  bool open_ = false;
  bool closing_ = false;
  bool reading_ = false;
  bool eof_ = false;      // the peer shut its side: nothing more to read
  bool polling_ = false;  // out_poll_ started
  bool corked_ = false;
  bool no_sendfile_ = false;       // sendfile refused: pread + uv_write only
  std::unique_ptr<char[]> chunk_;  // a file chunk read with pread (one under way at most)
  // Write requests are allocated on demand and pooled while others are
  // under way; the last one done is freed, so an idle connection holds none.
  WriteReq* free_writes_ = nullptr;
};

}  // namespace cdn::net
