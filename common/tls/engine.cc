// SPDX-License-Identifier: MIT
#include "common/tls/engine.hpp"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <utility>

namespace cdn::tls {

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
  in_ = BIO_new(BIO_s_mem());
  out_ = BIO_new(BIO_s_mem());
  if (ssl_ == nullptr || in_ == nullptr || out_ == nullptr) {
    BIO_free(in_);
    BIO_free(out_);
    in_ = out_ = nullptr;
    state_ = State::Failed;
    error_ = "out of memory for a TLS connection";
    return;
  }
  // An empty memory BIO reads as "retry", not as the end of the stream.
  BIO_set_mem_eof_return(in_, -1);
  BIO_set_mem_eof_return(out_, -1);
  SSL_set_bio(ssl_, in_, out_);
}

Engine Engine::server(std::shared_ptr<const ServerContext> context, int send_fd) {
  Engine e;
  e.server_ = std::move(context);
  e.send_fd_ = send_fd;
  return e;
}

// SSL_set_wfd replaces (and frees) the memory BIO with a socket BIO that
// does not close the socket, and asks the kernel for the tls ULP
// (ktls_enable: harmless where it is refused). SSL_OP_ENABLE_KTLS then lets
// OpenSSL install the write keys where the cipher allows.
void Engine::write_to_socket() {
  if (ssl_ == nullptr || send_fd_ < 0) return;
  SSL_set_options(ssl_, SSL_OP_ENABLE_KTLS);
  if (SSL_set_wfd(ssl_, send_fd_) == 1) {
    out_ = nullptr;
  } else {
    ERR_clear_error();
    send_fd_ = -1;  // the memory BIO stays
  }
}

bool Engine::kernel_sends() const {
#ifndef OPENSSL_NO_KTLS
  return ssl_ != nullptr && out_ == nullptr && (state_ == State::Open || state_ == State::Closed) &&
         BIO_get_ktls_send(SSL_get_wbio(ssl_));
#else
  return false;
#endif
}

void Engine::stop_direct_writes() {
  if (ssl_ == nullptr || out_ != nullptr || (state_ != State::Open && state_ != State::Closed)) {
    return;
  }
  BIO* mem = BIO_new(BIO_s_mem());
  if (mem == nullptr) {
    state_ = State::Failed;
    error_ = "out of memory for a TLS connection";
    return;
  }
  BIO_set_mem_eof_return(mem, -1);
  out_ = mem;
  SSL_set0_wbio(ssl_, out_);  // frees the socket BIO, which leaves the socket open
  send_fd_ = -1;
}

bool Engine::first_record_in() const {
  // The record layer's header: type, version (2), length (2). Anything but
  // a handshake record, or a length TLS does not allow, goes to OpenSSL at
  // once, which refuses it.
  constexpr size_t kMaxRecord = 16384 + 2048;
  if (early_.size() < 5) return false;
  const auto* p = reinterpret_cast<const unsigned char*>(early_.data());
  const size_t length = (size_t{p[3]} << 8) | p[4];
  return p[0] != 0x16 || length > kMaxRecord || early_.size() >= 5 + length;
}

Engine Engine::client(std::shared_ptr<const ClientContext> context, std::string_view host) {
  Engine e;
  e.client_ = std::move(context);
  e.init(e.client_->ctx());
  if (e.ssl_ == nullptr) return e;
  SSL_set_connect_state(e.ssl_);
  const std::string name(host);
  if (!is_ip_literal(name)) SSL_set_tlsext_host_name(e.ssl_, name.c_str());
  if (e.client_->verify()) {
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
    in_ = std::exchange(o.in_, nullptr);
    out_ = std::exchange(o.out_, nullptr);
    send_fd_ = std::exchange(o.send_fd_, -1);
    want_write_ = o.want_write_;
    state_ = o.state_;
    error_ = std::move(o.error_);
    early_ = std::move(o.early_);
    server_ = std::move(o.server_);
    client_ = std::move(o.client_);
  }
  return *this;
}

Engine::~Engine() { SSL_free(ssl_); }

void Engine::fail(int ret) {
  const int e = SSL_get_error(ssl_, ret);
  std::string why = take_errors();
  if (state_ == State::Handshaking && client_ != nullptr) {
    const long v = SSL_get_verify_result(ssl_);
    if (v != X509_V_OK) why = X509_verify_cert_error_string(v);
  }
  if (why.empty()) {
    why = e == SSL_ERROR_SYSCALL ? "the peer's stream ended inside a record"
                                 : "TLS error " + std::to_string(e);
  }
  error_ = (state_ == State::Handshaking ? "handshake failed: " : "") + why;
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
  if (ssl_ == nullptr && server_ != nullptr) {
    early_.append(ciphertext);
    if (!first_record_in()) return state_;
    init(server_->initial());
    if (ssl_ == nullptr) return state_;
    write_to_socket();
    SSL_set_accept_state(ssl_);
    BIO_write(in_, early_.data(), static_cast<int>(early_.size()));
    std::string().swap(early_);
    handshake();
    return state_;
  }
  if (in_ == nullptr) return state_;
  if (!ciphertext.empty()) BIO_write(in_, ciphertext.data(), static_cast<int>(ciphertext.size()));
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
  return ssl_ == nullptr ? !early_.empty() : SSL_pending(ssl_) > 0 || BIO_ctrl_pending(in_) > 0;
}

size_t Engine::pending_output() const { return out_ == nullptr ? 0 : BIO_ctrl_pending(out_); }

size_t Engine::take_output(std::string& out) {
  const size_t n = pending_output();
  if (n == 0) return 0;
  const size_t at = out.size();
  out.resize(at + n);
  const int got = BIO_read(out_, out.data() + at, static_cast<int>(n));
  out.resize(at + (got > 0 ? static_cast<size_t>(got) : 0));
  return got > 0 ? static_cast<size_t>(got) : 0;
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
