// SPDX-License-Identifier: MIT
// An HTTP/1.1 client connection on libuv, for cdn-get and the balancer's
// prober. One request at a time; the connection is kept alive and reused
// for the next request to the same address (probes stay cheap).
//
// Ownership: ClientConnection::create() returns a Ptr; dropping the Ptr
// closes the transport and the timer, and the object is freed once the
// transports it made said on_closed and the timer's close callback ran
// (never from inside a call of the owner's). No callback runs after the Ptr
// is gone, and a callback may drop it (the callbacks are kept until the
// object is freed, so the one running is not destroyed). Bytes go through a
// Transport (transport.hpp): a TCP one today, made anew for each connection
// attempt.
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
#include "common/net/transport.hpp"
#include "common/uv/handle.hpp"

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

class ClientConnection final : private TransportUser {
 public:
  struct Deleter {
    void operator()(ClientConnection* c) const { c->close(); }
  };
  using Ptr = std::unique_ptr<ClientConnection, Deleter>;

  // `layer`: what goes over each TCP connection before HTTP (TLS; see
  // transport.hpp); none: plain HTTP.
  static Ptr create(uv_loop_t* loop, const Address& address, const http::Limits& limits = {},
                    TransportLayer layer = {});

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
  ClientConnection(uv_loop_t* loop, const Address& address, const http::Limits& limits,
                   TransportLayer layer);
  ~ClientConnection() = default;
  void close();
  void connect();
  void send();
  void fail(ClientError e, std::string message, int code = 0);
  void complete();
  void disconnect();
  void arm();
  bool report_headers();
  // The connection broke (reset, EOF, a failed write) while `what`: a
  // kept-alive connection the server closed as we reused it gets one fresh
  // try; otherwise the request fails (or, idle, the owner is told).
  void broken(const std::string& why);
  // Freed once nothing of libuv's refers to it any more.
  void maybe_free();
  // Runs on_headers/on_body: while one runs, close() leaves cb_ alone.
  template <typename F>
  bool call(F&& f) {
    struct Calling {
      int& n;
      explicit Calling(int& c) : n(++c) {}
      ~Calling() { --n; }
    } calling(calling_);
    return f();
  }
  // Runs a transport callback's work: an exception (thrown by an owner's
  // callback) is logged and fails the request in flight; nothing else.
  template <typename F>
  void guard(const char* where, F&& f) noexcept {
    if (uv::guarded(where, std::forward<F>(f))) return;
    uv::guarded(where, [this] {
      if (!closing_ && busy_) fail(ClientError::Aborted, "a callback failed");
    });
  }

  // TransportUser: only the current transport calls anything but on_closed.
  void on_open(int status) noexcept override;
  void on_read(std::string_view data) noexcept override;
  void on_eof() noexcept override;
  void on_error(int status) noexcept override;
  void on_write_done(int status) noexcept override;
  void on_writable() noexcept override {}
  size_t read_budget() const noexcept override;
  void on_closed() noexcept override;

  uv_loop_t* loop_;
  Address address_;
  http::ResponseParser parser_;
  TransportLayer layer_;
  uv::Ptr<uv_timer_t> timer_;
  Transport::Ptr transport_;  // the current attempt; null between connections
  int live_transports_ = 0;   // made and not yet closed (on_closed)
  bool timer_open_ = false;
  bool connected_ = false;  // transport_ is open
  bool writing_ = false;    // a write unit of out_ is under way
  bool closing_ = false;
  bool busy_ = false;
  bool reused_ = false;     // this request went out on a kept-alive connection
  bool got_bytes_ = false;  // any byte of the response arrived
  bool headers_reported_ = false;
  bool aborted_ = false;
  bool external_timer_ = false;
  int calling_ = 0;             // on_headers/on_body frames on the stack
  uint64_t last_progress_ = 0;  // uv_now() at the last progress
  std::string out_;             // the request bytes (a write unit keeps them until done)
  std::chrono::milliseconds timeout_{5000};
  ClientCallbacks cb_;
  std::function<void()> on_idle_close_;
};

}  // namespace cdn::net
