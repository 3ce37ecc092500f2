// SPDX-License-Identifier: MIT
#include "common/net/client.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cerrno>

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
                                               const http::Limits& limits) {
  return Ptr(new ClientConnection(loop, address, limits));
}

ClientConnection::ClientConnection(uv_loop_t* loop, const Address& address,
                                   const http::Limits& limits)
    : loop_(loop), address_(address), parser_(limits) {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  timer_open_ = true;
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
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
    auto* self = static_cast<ClientConnection*>(h->data);
    self->timer_open_ = false;
    if (self->live_streams_ == 0) delete self;
  });
}

void ClientConnection::request(std::string_view method, std::string_view target,
                               std::string_view host, std::string_view extra_headers,
                               std::chrono::milliseconds timeout, ClientCallbacks callbacks) {
  if (closing_) return;
  cb_ = std::move(callbacks);
  timeout_ = timeout;
  busy_ = true;
  got_bytes_ = false;
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
  if (stream_ != nullptr && stream_->connected && !stream_->closing) {
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
  if (external_timer_) return;
  uv_timer_start(
      &timer_, [](uv_timer_t* t) { static_cast<ClientConnection*>(t->data)->expire(); },
      static_cast<uint64_t>(timeout_.count()), 0);
}

void ClientConnection::expire() {
  if (closing_ || !busy_) return;
  fail(ClientError::Timeout, "no progress from " + address_.str() + " within " +
                                 std::to_string(timeout_.count()) + " ms");
}

void ClientConnection::connect() {
  disconnect();
  auto* s = new Stream();
  s->owner = this;
  uv_tcp_init(loop_, &s->tcp);
  s->tcp.data = s;
  ++live_streams_;
  stream_ = s;
  s->connect.data = s;
  const int rc = uv_tcp_connect(&s->connect, &s->tcp, address_.sa(), on_connect);
  if (rc != 0) {
    fail(ClientError::Connect, address_.str() + ": " + uv_strerror(rc), rc);
    return;
  }
  s->connect_pending = true;
}

void ClientConnection::on_connect(uv_connect_t* req, int status) {
  auto* s = static_cast<Stream*>(req->data);
  s->connect_pending = false;
  ClientConnection* self = s->owner;
  if (s->closing || self->stream_ != s) return;
  if (status < 0) {
    self->fail(ClientError::Connect, self->address_.str() + ": " + uv_strerror(status), status);
    return;
  }
  s->connected = true;
  uv_tcp_nodelay(&s->tcp, 1);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&s->tcp), on_alloc, on_read);
  if (self->busy_) self->send();
}

void ClientConnection::send() {
  // Straight to the socket first: a request is a few dozen bytes and the
  // socket's buffer is empty between requests, so it goes out whole. uv_write
  // would queue it and, once written, stop watching for POLLOUT, which costs
  // an epoll_ctl per request.
  // send(2) rather than uv_try_write's writev(2): the socket call skips the
  // file layer (fdget_pos, vfs_write), a measurable part of a probe's cost.
  auto* tcp = reinterpret_cast<uv_stream_t*>(&stream_->tcp);
  int rc = UV_EAGAIN;
  uv_os_fd_t fd = -1;
  if (uv_stream_get_write_queue_size(tcp) == 0 &&
      uv_fileno(reinterpret_cast<uv_handle_t*>(tcp), &fd) == 0) {
    ssize_t n;
    do {
      n = ::send(fd, out_.data(), out_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    rc = n >= 0 ? static_cast<int>(n)
                : (errno == EWOULDBLOCK ? UV_EAGAIN : uv_translate_sys_error(errno));
  }
  if (rc == static_cast<int>(out_.size())) return;
  if (rc < 0 && rc != UV_EAGAIN && reused_ && !got_bytes_) {
    // The server closed the kept-alive connection as we reused it: one fresh try.
    reused_ = false;
    connect();
    return;
  }
  // The rest through libuv's queue; an error is reported by on_write as
  // before (never from within request()).
  write_rest(rc > 0 ? static_cast<size_t>(rc) : 0);
}

void ClientConnection::write_rest(size_t from) {
  Stream* s = stream_;
  uv_buf_t buf = uv_buf_init(out_.data() + from, static_cast<unsigned>(out_.size() - from));
  s->write.data = s;
  const int rc = uv_write(&s->write, reinterpret_cast<uv_stream_t*>(&s->tcp), &buf, 1, on_write);
  if (rc != 0) {
    fail(ClientError::Reset, address_.str() + ": " + uv_strerror(rc));
    return;
  }
  s->write_pending = true;
}

void ClientConnection::on_write(uv_write_t* req, int status) {
  auto* s = static_cast<Stream*>(req->data);
  s->write_pending = false;
  ClientConnection* self = s->owner;
  if (s->closing || self->stream_ != s || !self->busy_) return;
  if (status < 0) {
    if (self->reused_ && !self->got_bytes_) {
      // The server closed the kept-alive connection as we reused it: one fresh try.
      self->reused_ = false;
      self->connect();
      return;
    }
    self->fail(ClientError::Reset, self->address_.str() + ": " + uv_strerror(status));
  }
}

void ClientConnection::on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
  // One read buffer per thread, not per connection: libuv calls on_read
  // right after this, and the parser copies what it keeps (head fields into
  // the Response, body pieces to the sink) before on_read returns. A prober
  // holding 10,000 idle kept-alive connections would otherwise hold 10,000
  // buffers of 64 KiB.
  thread_local std::string slab(kReadBuffer, '\0');
  *buf = uv_buf_init(slab.data(), static_cast<unsigned>(slab.size()));
}

void ClientConnection::on_read(uv_stream_t* st, ssize_t nread, const uv_buf_t* buf) {
  auto* s = static_cast<Stream*>(st->data);
  ClientConnection* self = s->owner;
  if (s->closing || self->stream_ != s) return;
  if (nread > 0) {
    if (!self->busy_) {
      // Bytes nobody asked for: the connection is out of step; drop it.
      self->disconnect();
      return;
    }
    self->got_bytes_ = true;
    self->arm();
    const auto res = self->parser_.feed(std::string_view(buf->base, static_cast<size_t>(nread)));
    if (self->closing_) return;  // a callback dropped the connection
    if (res.status == http::ParseStatus::Error) {
      self->fail(ClientError::Protocol,
                 self->address_.str() + ": malformed response: " + std::string(res.reason));
      return;
    }
    if (self->parser_.headers_complete() && !self->report_headers()) {
      if (!self->closing_) self->fail(ClientError::Aborted, "aborted");
      return;
    }
    if (self->aborted_) {
      self->fail(ClientError::Aborted, "aborted");
      return;
    }
    if (res.status == http::ParseStatus::Complete) self->complete();
    return;
  }
  if (nread == 0) return;
  // EOF or error.
  if (!self->busy_) {
    self->disconnect();
    // Last use of self: the callback may start a request or drop the Ptr.
    if (self->on_idle_close_) {
      auto cb = self->on_idle_close_;
      cb();
    }
    return;
  }
  if (nread == UV_EOF) {
    const auto res = self->parser_.finish();
    if (self->closing_) return;
    if (res.status == http::ParseStatus::Complete) {
      if (self->parser_.headers_complete() && !self->report_headers()) {
        if (!self->closing_) self->fail(ClientError::Aborted, "aborted");
        return;
      }
      self->disconnect();
      self->complete();
      return;
    }
  }
  if (self->reused_ && !self->got_bytes_) {
    self->reused_ = false;
    self->connect();
    return;
  }
  const std::string why = nread == UV_EOF ? "closed before the response was complete"
                                          : uv_strerror(static_cast<int>(nread));
  self->fail(ClientError::Reset, self->address_.str() + ": " + why + " (after " +
                                     std::to_string(self->parser_.body_bytes()) + " body bytes)");
}

void ClientConnection::complete() {
  busy_ = false;
  uv_timer_stop(&timer_);
  if (!parser_.response().keep_alive) disconnect();
  auto done = std::move(cb_.on_done);
  cb_ = {};
  if (done) done(ClientResult{}, parser_.response());
}

void ClientConnection::fail(ClientError e, std::string message, int code) {
  busy_ = false;
  uv_timer_stop(&timer_);
  disconnect();
  auto done = std::move(cb_.on_done);
  cb_ = {};
  if (done) done(ClientResult{e, std::move(message), code}, parser_.response());
}

void ClientConnection::disconnect() {
  Stream* s = stream_;
  stream_ = nullptr;
  if (s == nullptr || s->closing) return;
  s->closing = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&s->tcp), [](uv_handle_t* h) {
    auto* st = static_cast<Stream*>(h->data);
    ClientConnection* self = st->owner;
    delete st;
    if (--self->live_streams_ == 0 && self->closing_ && !self->timer_open_) delete self;
  });
}

}  // namespace cdn::net
