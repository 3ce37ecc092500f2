// SPDX-License-Identifier: MIT
// An HTTP/1.1 client connection on libuv, for cdn-get and the balancer's
// prober. One request at a time; the connection is kept alive and reused
// for the next request to the same address (probes stay cheap).
//
// Ownership: ClientConnection::create() returns a Ptr; dropping the Ptr
// closes the handles and the close callback frees the object. No callback
// runs after the Ptr is gone, and a callback may drop it (the callbacks are
// kept until the object is freed, so the one running is not destroyed).
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/http/message.hpp"
#include "common/http/parser.hpp"
#include "common/net/address.hpp"

namespace cdn::net {

enum class ClientError {
  None,
  Connect,   // refused, unreachable
  Timeout,   // no progress within the timeout
  Reset,     // the peer closed or reset before the response was complete
  Protocol,  // malformed response
  Aborted,   // a callback asked to stop
};
std::string_view to_string(ClientError e) noexcept;

struct ClientResult {
  ClientError error = ClientError::None;
  std::string message;  // for logs: what went wrong
  int code = 0;         // the libuv error behind it, when there is one (e.g. UV_ECONNREFUSED)
  bool ok() const { return error == ClientError::None; }
};

struct ClientCallbacks {
  // Head received; return false to abort.
  std::function<bool(const http::Response&)> on_headers;
  // A piece of the body; return false to abort (e.g. a disk write failed).
  std::function<bool(std::string_view)> on_body;
  // Exactly once per request, unless the connection was dropped first.
  std::function<void(const ClientResult&, const http::Response&)> on_done;
};

class ClientConnection {
 public:
  struct Deleter {
    void operator()(ClientConnection* c) const { c->close(); }
  };
  using Ptr = std::unique_ptr<ClientConnection, Deleter>;

  static Ptr create(uv_loop_t* loop, const Address& address, const http::Limits& limits = {});

  // Send `method target` with Host and the extra header lines (each
  // "Name: value\r\n"). `timeout`: the longest wait for any progress
  // (connect, first byte, each piece of the body).
  void request(std::string_view method, std::string_view target, std::string_view host,
               std::string_view extra_headers, std::chrono::milliseconds timeout,
               ClientCallbacks callbacks);
  bool busy() const { return busy_; }
  // Called (on the loop, outside any request) when the peer closes or resets
  // the kept-alive connection while no request is in flight: a server that
  // drains or dies says so at once, and the prober re-probes instead of
  // waiting for its next turn. Not called for closes this side decides.
  void set_on_idle_close(std::function<void()> cb) { on_idle_close_ = std::move(cb); }
  const Address& address() const { return address_; }

  // For an owner of thousands of connections that keeps one timer of its own
  // (the prober): the connection then starts no timer (libuv keeps timers in
  // one heap, and 10,000 of them re-armed on every probe and every read cost
  // more than the probes' own parsing). The owner must call expire() once
  // uv_now() reaches progress_deadline(), which moves on with each progress.
  void use_external_timer() { external_timer_ = true; }
  // Loop time (uv_now, ms) at which the request in flight times out; 0 when
  // none is in flight.
  uint64_t progress_deadline() const {
    return busy_ ? last_progress_ + static_cast<uint64_t>(timeout_.count()) : 0;
  }
  // Fails the request in flight with ClientError::Timeout, as the
  // connection's own timer would have.
  void expire();

 private:
  ClientConnection(uv_loop_t* loop, const Address& address, const http::Limits& limits);
  ~ClientConnection() = default;
  void close();
  void connect();
  void send();
  void fail(ClientError e, std::string message, int code = 0);
  void complete();
  void disconnect();
  void arm();
  void write_rest(size_t from);
  bool report_headers();
  // Runs on_headers/on_body: while one runs, close() leaves cb_ alone.
  template <typename F>
  bool call(F&& f) {
    ++calling_;
    const bool ok = f();
    --calling_;
    return ok;
  }
  static void on_connect(uv_connect_t* req, int status);
  static void on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  // The TCP handle of one connection attempt; replaced on reconnect and freed
  // in its own close callback (the timer lives as long as the object).
  struct Stream {
    uv_tcp_t tcp{};
    uv_connect_t connect{};
    uv_write_t write{};
    ClientConnection* owner = nullptr;
    bool connected = false;
    bool closing = false;
    bool write_pending = false;
    bool connect_pending = false;
  };

  uv_loop_t* loop_;
  Address address_;
  http::ResponseParser parser_;
  uv_timer_t timer_{};
  Stream* stream_ = nullptr;
  int live_streams_ = 0;
  bool timer_open_ = false;
  bool closing_ = false;
  bool busy_ = false;
  bool reused_ = false;     // this request went out on a kept-alive connection
  bool got_bytes_ = false;  // any byte of the response arrived
  bool headers_reported_ = false;
  bool aborted_ = false;
  bool external_timer_ = false;
  int calling_ = 0;             // on_headers/on_body frames on the stack
  uint64_t last_progress_ = 0;  // uv_now() at the last progress
  std::string out_;             // the request bytes
  std::chrono::milliseconds timeout_{5000};
  ClientCallbacks cb_;
  std::function<void()> on_idle_close_;
};

}  // namespace cdn::net
