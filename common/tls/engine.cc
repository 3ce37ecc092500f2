// SPDX-License-Identifier: MIT
#include "common/tls/engine.hpp"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace cdn::tls {

namespace {

// The engine's BIO, one for both ways: OpenSSL reads the peer's ciphertext
// from Wire::in and appends its own to Wire::out. Memory BIOs would do the
// same but keep their largest buffer (a handshake's flight, a 64 KiB file
// chunk's records) for the life of the connection and copy the output once
// more on the way out; here an emptied side holds no memory (an idle
// connection keeps none) and take_output() moves Wire::out out whole.
int wire_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

long wire_ctrl(BIO* /*b*/, int cmd, long /*num*/, void* /*ptr*/) {
  // A flush has nowhere further to go; nothing else is asked of it.
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

}  // namespace

// Friends of Engine's private Wire.
struct WireAccess {
  static int write(BIO* b, const char* data, int size) {
    BIO_clear_retry_flags(b);
    if (size <= 0) return 0;
    static_cast<Engine::Wire*>(BIO_get_data(b))->out.append(data, static_cast<size_t>(size));
    return size;
  }

  static int read(BIO* b, char* data, int size) {
    BIO_clear_retry_flags(b);
    auto* w = static_cast<Engine::Wire*>(BIO_get_data(b));
    const size_t left = w->in.size() - w->in_at;
    if (left == 0 || size <= 0) {
      // Empty reads as "retry", not as the end of the stream.
      BIO_set_retry_read(b);
      return -1;
    }
    const size_t n = std::min(left, static_cast<size_t>(size));
    std::memcpy(data, w->in.data() + w->in_at, n);
    w->in_at += n;
    if (w->in_at == w->in.size()) {
      std::string().swap(w->in);
      w->in_at = 0;
    }
    return static_cast<int>(n);
  }

  static BIO_METHOD* method() {
    static BIO_METHOD* const m = [] {
      BIO_METHOD* x = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "cdn engine wire");
      if (x != nullptr) {
        BIO_meth_set_write(x, write);
        BIO_meth_set_read(x, read);
        BIO_meth_set_ctrl(x, wire_ctrl);
        BIO_meth_set_create(x, wire_create);
      }
      return x;
    }();
    return m;
  }
};

namespace {

bool is_ip_literal(const std::string& s) {
  in_addr a4{};
  in6_addr a6{};
  return inet_pton(AF_INET, s.c_str(), &a4) == 1 || inet_pton(AF_INET6, s.c_str(), &a6) == 1;
}

}  // namespace

std::string_view to_string(Engine::State s) noexcept {
  switch (s) {
    case Engine::State::Handshaking:
      return "handshaking";
    case Engine::State::Open:
      return "open";
    case Engine::State::Closed:
      return "closed";
    case Engine::State::Failed:
      return "failed";
  }
  return "?";
}

void Engine::init(SSL_CTX* ctx) {
  ssl_ = SSL_new(ctx);
  BIO_METHOD* method = WireAccess::method();
  BIO* bio = method == nullptr ? nullptr : BIO_new(method);
  if (ssl_ == nullptr || bio == nullptr) {
    BIO_free(bio);
    SSL_free(ssl_);
    ssl_ = nullptr;
    state_ = State::Failed;
    error_ = std::make_unique<std::string>("out of memory for a TLS connection");
    return;
  }
  BIO_set_data(bio, &wire_);
  // One BIO both ways: SSL_set_bio takes the one reference and adds another,
  // one per side (a kTLS engine's write side may let its own go).
  SSL_set_bio(ssl_, bio, bio);
}

Engine Engine::server(std::shared_ptr<const ServerContext> context, int send_fd) {
  Engine e;
  e.context_ = std::move(context);
  e.send_fd_ = send_fd;
  return e;
}

// SSL_set_wfd replaces the write side with a socket BIO that does not close
// the socket, and asks the kernel for the tls ULP (ktls_enable: harmless
// where it is refused). The Wire was both sides, with a reference for each
// (SSL_set_bio took a second one): the write side's is dropped, the read
// side keeps the Wire. SSL_OP_ENABLE_KTLS then lets OpenSSL install the
// write keys where the cipher allows.
void Engine::write_to_socket() {
  if (ssl_ == nullptr || send_fd_ < 0) return;
  SSL_set_options(ssl_, SSL_OP_ENABLE_KTLS);
  if (SSL_set_wfd(ssl_, send_fd_) != 1) {
    ERR_clear_error();
    send_fd_ = -1;  // the Wire still writes
  }
}

bool Engine::kernel_sends() const {
#ifndef OPENSSL_NO_KTLS
  return ssl_ != nullptr && send_fd_ >= 0 && (state_ == State::Open || state_ == State::Closed) &&
         BIO_get_ktls_send(SSL_get_wbio(ssl_));
#else
  return false;
#endif
}

void Engine::stop_direct_writes() {
  if (ssl_ == nullptr || send_fd_ < 0 || (state_ != State::Open && state_ != State::Closed)) {
    return;
  }
  // The Wire writes again: a second reference for the write side, which
  // SSL_set0_wbio takes; it frees the socket BIO, which leaves the socket open.
  BIO* wire = SSL_get_rbio(ssl_);
  BIO_up_ref(wire);
  SSL_set0_wbio(ssl_, wire);
  send_fd_ = -1;
}

bool Engine::first_record_in() const {
  // The record layer's header: type, version (2), length (2). Anything but
  // a handshake record, or a length TLS does not allow, goes to OpenSSL at
  // once, which refuses it.
  constexpr size_t kMaxRecord = 16384 + 2048;
  const std::string& in = wire_.in;
  if (in.size() < 5) return false;
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  const size_t length = (size_t{p[3]} << 8) | p[4];
  return p[0] != 0x16 || length > kMaxRecord || in.size() >= 5 + length;
}

Engine Engine::client(std::shared_ptr<const ClientContext> context, std::string_view host) {
  Engine e;
  const ClientContext& c = *context;
  e.context_ = std::move(context);
  e.client_ = true;
  e.init(c.ctx());
  if (e.ssl_ == nullptr) return e;
  SSL_set_connect_state(e.ssl_);
  const std::string name(host);
  if (!is_ip_literal(name)) SSL_set_tlsext_host_name(e.ssl_, name.c_str());
  if (c.verify()) {
    if (is_ip_literal(name)) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(e.ssl_), name.c_str());
    } else {
      SSL_set_hostflags(e.ssl_, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      SSL_set1_host(e.ssl_, name.c_str());
    }
  }
  return e;
}

Engine::Engine(Engine&& o) noexcept { *this = std::move(o); }

Engine& Engine::operator=(Engine&& o) noexcept {
  if (this != &o) {
    SSL_free(ssl_);
    ssl_ = std::exchange(o.ssl_, nullptr);
    wire_ = std::move(o.wire_);
    o.wire_ = Wire{};
    // The BIO (the read side's always is the Wire) follows the Wire.
    if (ssl_ != nullptr) BIO_set_data(SSL_get_rbio(ssl_), &wire_);
    send_fd_ = std::exchange(o.send_fd_, -1);
    want_write_ = o.want_write_;
    client_ = o.client_;
    state_ = o.state_;
    error_ = std::move(o.error_);
    context_ = std::move(o.context_);
  }
  return *this;
}

Engine::~Engine() { SSL_free(ssl_); }

const std::string& Engine::error() const {
  static const std::string kNone;
  return error_ ? *error_ : kNone;
}

void Engine::fail(int ret) {
  const int e = SSL_get_error(ssl_, ret);
  std::string why = take_errors();
  if (state_ == State::Handshaking && client_) {
    const long v = SSL_get_verify_result(ssl_);
    if (v != X509_V_OK) why = X509_verify_cert_error_string(v);
  }
  if (why.empty()) {
    why = e == SSL_ERROR_SYSCALL ? "the peer's stream ended inside a record"
                                 : "TLS error " + std::to_string(e);
  }
  error_ = std::make_unique<std::string>(
      (state_ == State::Handshaking ? "handshake failed: " : "") + why);
  state_ = State::Failed;
}

void Engine::handshake() {
  ERR_clear_error();
  want_write_ = false;
  const int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    state_ = State::Open;
    return;
  }
  const int e = SSL_get_error(ssl_, r);
  want_write_ = e == SSL_ERROR_WANT_WRITE;
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
  fail(r);
}

Engine::State Engine::start() {
  if (state_ == State::Handshaking && ssl_ != nullptr) handshake();
  return state_;
}

Engine::State Engine::receive(std::string_view ciphertext) {
  if (state_ == State::Failed) return state_;
  if (ssl_ == nullptr && !client_ && context_ != nullptr) {
    wire_.in.append(ciphertext);
    if (!first_record_in()) return state_;
    init(server_context().initial());
    if (ssl_ == nullptr) return state_;
    write_to_socket();
    SSL_set_accept_state(ssl_);
    handshake();
    return state_;
  }
  if (ssl_ == nullptr) return state_;
  wire_.in.append(ciphertext);
  if (state_ == State::Handshaking) handshake();
  return state_;
}

size_t Engine::read(char* buffer, size_t size) {
  if (state_ != State::Open || size == 0) return 0;
  ERR_clear_error();
  size_t got = 0;
  const int r = SSL_read_ex(ssl_, buffer, size, &got);
  if (r == 1) return got;
  const int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
  if (e == SSL_ERROR_ZERO_RETURN) {
    state_ = State::Closed;
    return 0;
  }
  fail(r);
  return 0;
}

size_t Engine::write(std::string_view plaintext) {
  if (state_ != State::Open || plaintext.empty()) return 0;
  ERR_clear_error();
  size_t done = 0;
  const int r = SSL_write_ex(ssl_, plaintext.data(), plaintext.size(), &done);
  if (r == 1) return done;
  const int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
  fail(r);
  return 0;
}

void Engine::close() {
  if (ssl_ == nullptr || state_ == State::Failed || state_ == State::Handshaking) return;
  ERR_clear_error();
  SSL_shutdown(ssl_);
  ERR_clear_error();
}

bool Engine::has_buffered_input() const {
  if (ssl_ == nullptr) return !wire_.in.empty();
  return SSL_pending(ssl_) > 0 || wire_.in.size() > wire_.in_at;
}

size_t Engine::pending_output() const { return wire_.out.size(); }

size_t Engine::take_output(std::string& out) {
  const size_t n = pending_output();
  if (n == 0) return 0;
  if (out.empty()) {
    out.swap(wire_.out);
    std::string().swap(wire_.out);
  } else {
    out.append(wire_.out);
    std::string().swap(wire_.out);
  }
  return n;
}

bool Engine::resumed() const { return ssl_ != nullptr && SSL_session_reused(ssl_) == 1; }

Protocol Engine::protocol() const {
  if (ssl_ == nullptr) return Protocol::None;
  const unsigned char* p = nullptr;
  unsigned int n = 0;
  SSL_get0_alpn_selected(ssl_, &p, &n);
  const std::string_view v(reinterpret_cast<const char*>(p), n);
  if (v == "h2") return Protocol::H2;
  if (v == "http/1.1") return Protocol::Http11;
  return Protocol::None;
}

std::string_view Engine::server_name() const {
  const char* n = ssl_ == nullptr ? nullptr : SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
  return n == nullptr ? std::string_view() : std::string_view(n);
}

std::string_view Engine::version() const { return ssl_ == nullptr ? "" : SSL_get_version(ssl_); }

std::string_view Engine::cipher() const {
  const char* c = ssl_ == nullptr ? nullptr : SSL_get_cipher_name(ssl_);
  return c == nullptr ? std::string_view() : std::string_view(c);
}

}  // namespace cdn::tls
