// SPDX-License-Identifier: MIT
#include "common/net/client.hpp"

#include <spdlog/spdlog.h>

#include "common/net/tcp.hpp"

namespace cdn::net {

namespace {
constexpr size_t kReadBuffer = 64 * 1024;
}

std::string_view to_string(ClientError e) noexcept {
  switch (e) {
    case ClientError::None:
      return "ok";
    case ClientError::Connect:
      return "connect failed";
    case ClientError::Timeout:
      return "timed out";
    case ClientError::Reset:
      return "connection lost";
    case ClientError::Protocol:
      return "bad response";
    case ClientError::Aborted:
      return "aborted";
  }
  return "?";
}

ClientConnection::Ptr ClientConnection::create(uv_loop_t* loop, const Address& address,
                                               const http::Limits& limits, TransportLayer layer) {
  return Ptr(new ClientConnection(loop, address, limits, std::move(layer)));
}

ClientConnection::ClientConnection(uv_loop_t* loop, const Address& address,
                                   const http::Limits& limits, TransportLayer layer)
    : loop_(loop), address_(address), parser_(limits), layer_(std::move(layer)) {
  timer_ = uv::make_timer(loop_, [this] { guard("timer", [this] { expire(); }); });
  if (timer_) {
    timer_open_ = true;
    timer_->on_closed = [this] {
      timer_open_ = false;
      maybe_free();
    };
  }
}

void ClientConnection::close() {
  if (closing_) return;
  closing_ = true;
  busy_ = false;
  // Dropped from inside on_headers or on_body: that std::function is running,
  // so the callbacks stay until the object is freed (a later loop turn);
  // on_read sees closing_ and calls nothing more.
  if (calling_ == 0) cb_ = {};
  on_idle_close_ = nullptr;
  disconnect();
  uv::close(timer_);
}

void ClientConnection::maybe_free() {
  if (closing_ && live_transports_ == 0 && !timer_open_) delete this;
}

void ClientConnection::on_closed() noexcept {
  --live_transports_;
  maybe_free();
}

void ClientConnection::request(std::string_view method, std::string_view target,
                               std::string_view host, std::string_view extra_headers,
                               std::chrono::milliseconds timeout, ClientCallbacks callbacks) {
  if (closing_) return;
  cb_ = std::move(callbacks);
  timeout_ = timeout;
  busy_ = true;
  got_bytes_ = false;
  // A write of the last request still under way (its server answered
  // before reading it all) reads out_: the connection is not reused.
  if (writing_) disconnect();
  out_.clear();
  out_.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: ");
  out_.append(host).append("\r\n").append(extra_headers).append("\r\n");
  parser_.reset();
  parser_.expect_no_body(method == "HEAD");
  headers_reported_ = false;
  aborted_ = false;
  parser_.set_body_sink([this](std::string_view piece) {
    if (aborted_ || closing_) return;
    if (!report_headers()) return;
    if (cb_.on_body && !call([&] { return cb_.on_body(piece); })) aborted_ = true;
  });
  arm();
  if (connected_) {
    reused_ = true;
    send();
  } else {
    reused_ = false;
    connect();
  }
}

bool ClientConnection::report_headers() {
  if (headers_reported_) return !aborted_;
  headers_reported_ = true;
  if (cb_.on_headers && !call([&] { return cb_.on_headers(parser_.response()); })) {
    aborted_ = true;
  }
  return !aborted_ && !closing_;
}

void ClientConnection::arm() {
  last_progress_ = uv_now(loop_);
  if (external_timer_ || !timer_) return;
  uv::timer_start(timer_.get(), static_cast<uint64_t>(timeout_.count()), 0);
}

void ClientConnection::expire() {
  if (closing_ || !busy_) return;
  fail(ClientError::Timeout, "no progress from " + address_.str() + " within " +
                                 std::to_string(timeout_.count()) + " ms");
}

void ClientConnection::connect() {
  disconnect();
  int rc = 0;
  transport_ = TcpTransport::connect(loop_, address_, *this, &rc);
  if (!transport_) {
    fail(ClientError::Connect, address_.str() + ": " + uv_strerror(rc), rc);
    return;
  }
  ++live_transports_;  // it, or the layer over it, owes one on_closed
  if (layer_) {
    transport_ = layer_(std::move(transport_));
    transport_->bind(*this);
  }
}

void ClientConnection::on_open(int status) noexcept {
  guard("connect", [&] {
    if (status < 0) {
      fail(ClientError::Connect, address_.str() + ": " + uv_strerror(status), status);
      return;
    }
    connected_ = true;
    transport_->set_reading(true);
    if (busy_) send();
  });
}

// Straight to the socket first (the transport sends what it can at once): a
// request is a few dozen bytes and the socket's buffer is empty between
// requests, so it goes out whole, with no write request and no epoll change.
void ClientConnection::send() {
  const std::string_view bufs[] = {out_};
  const Handed h = transport_->write(bufs, {});
  if (h.error != 0) {
    broken(uv_strerror(h.error));
    return;
  }
  writing_ = h.queued > 0;
}

void ClientConnection::on_write_done(int status) noexcept {
  writing_ = false;
  if (!busy_ || status == 0) return;
  guard("write", [&] { broken(uv_strerror(status)); });
}

void ClientConnection::broken(const std::string& why) {
  if (!busy_) {
    disconnect();
    // Last use of this: the callback may start a request or drop the Ptr.
    if (on_idle_close_) {
      auto cb = on_idle_close_;
      cb();
    }
    return;
  }
  if (reused_ && !got_bytes_) {
    // The server closed the kept-alive connection as we reused it: one fresh try.
    reused_ = false;
    connect();
    return;
  }
  fail(ClientError::Reset, address_.str() + ": " + why + " (after " +
                               std::to_string(parser_.body_bytes()) + " body bytes)");
}

size_t ClientConnection::read_budget() const noexcept {
  // The transport's own read buffer is one per thread, not per connection:
  // the parser copies what it keeps (head fields into the Response, body
  // pieces to the sink) before on_read returns, so a prober holding 10,000
  // idle kept-alive connections holds no buffer for them.
  return kReadBuffer;
}

void ClientConnection::on_read(std::string_view data) noexcept {
  guard("read", [&] {
    if (!busy_) {
      // Bytes nobody asked for: the connection is out of step; drop it.
      disconnect();
      return;
    }
    got_bytes_ = true;
    arm();
    const auto res = parser_.feed(data);
    if (closing_) return;  // a callback dropped the connection
    if (res.status == http::ParseStatus::Error) {
      fail(ClientError::Protocol,
           address_.str() + ": malformed response: " + std::string(res.reason));
      return;
    }
    if (parser_.headers_complete() && !report_headers()) {
      if (!closing_) fail(ClientError::Aborted, "aborted");
      return;
    }
    if (aborted_) {
      fail(ClientError::Aborted, "aborted");
      return;
    }
    if (res.status == http::ParseStatus::Complete) complete();
  });
}

void ClientConnection::on_eof() noexcept {
  guard("read", [&] {
    if (busy_) {
      const auto res = parser_.finish();
      if (closing_) return;
      if (res.status == http::ParseStatus::Complete) {
        if (parser_.headers_complete() && !report_headers()) {
          if (!closing_) fail(ClientError::Aborted, "aborted");
          return;
        }
        disconnect();
        complete();
        return;
      }
    }
    broken("closed before the response was complete");
  });
}

void ClientConnection::on_error(int status) noexcept {
  guard("read", [&] { broken(uv_strerror(status)); });
}

void ClientConnection::complete() {
  busy_ = false;
  if (timer_) uv_timer_stop(&timer_->raw);
  if (!parser_.response().keep_alive) disconnect();
  auto done = std::move(cb_.on_done);
  cb_ = {};
  if (done) done(ClientResult{}, parser_.response());
}

void ClientConnection::fail(ClientError e, std::string message, int code) {
  busy_ = false;
  if (timer_) uv_timer_stop(&timer_->raw);
  disconnect();
  auto done = std::move(cb_.on_done);
  cb_ = {};
  if (done) done(ClientResult{e, std::move(message), code}, parser_.response());
}

// The current transport goes (its on_closed comes on a later loop turn).
void ClientConnection::disconnect() {
  transport_.reset();
  connected_ = false;
  writing_ = false;
}

}  // namespace cdn::net
