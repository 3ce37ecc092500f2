// SPDX-License-Identifier: MIT
#include "common/net/tls.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <iterator>
#include <new>

namespace cdn::net {

namespace {
// Plaintext handed up per on_read(): one TLS record's worth.
constexpr size_t kPlainChunk = 16 * 1024;
// What is read below while the handshake runs (a ClientHello with its
// certificates fits many times over).
constexpr size_t kHandshakeRead = 16 * 1024;
// Ciphertext units under way below before send_file() answers wait.
constexpr size_t kMaxUnits = 2;
}  // namespace

bool TlsTransport::ktls_offered() {
  std::ifstream in("/proc/sys/net/ipv4/tcp_available_ulp");
  std::string word;
  while (in >> word) {
    if (word == "tls") return true;
  }
  return false;
}

TlsTransport::TlsTransport(uv_loop_t* loop, Ptr below, tls::Engine engine)
    : loop_(loop), below_(std::move(below)), engine_(std::move(engine)) {}

void TlsTransport::start_timer(std::chrono::milliseconds timeout) {
  timer_ = uv::make_timer(loop_, [this] {
    if (closing_) return;
    if (!open_) {
      handshake_failed(UV_ETIMEDOUT, engine_.state() == tls::Engine::State::Failed
                                         ? engine_.error()
                                         : "the handshake timed out");
    } else {
      deliver();
    }
  });
  if (timer_) uv::timer_start(timer_.get(), static_cast<uint64_t>(timeout.count()), 0);
}

Transport::Ptr TlsTransport::server(uv_loop_t* loop, Ptr below,
                                    std::shared_ptr<const tls::ServerContext> context,
                                    std::chrono::milliseconds handshake_timeout) {
  if (!below) return nullptr;
  auto* t = new TlsTransport(loop, std::move(below), tls::Engine::server(std::move(context)));
  Ptr p(t);
  t->below_->bind(*t);
  // An engine that could not even be made fails at the next loop turn.
  const bool failed = t->engine_.state() == tls::Engine::State::Failed;
  t->start_timer(failed ? std::chrono::milliseconds(0) : handshake_timeout);
  t->update_reading();
  return p;
}

Transport::Ptr TlsTransport::client(uv_loop_t* loop, Ptr below,
                                    std::shared_ptr<const tls::ClientContext> context,
                                    std::string_view host,
                                    std::chrono::milliseconds handshake_timeout,
                                    std::function<void(const std::string&)> on_failure) {
  if (!below) return nullptr;
  auto* t = new TlsTransport(loop, std::move(below), tls::Engine::client(std::move(context), host));
  Ptr p(t);
  t->on_failure_ = std::move(on_failure);
  t->below_->bind(*t);
  const bool failed = t->engine_.state() == tls::Engine::State::Failed;
  t->start_timer(failed ? std::chrono::milliseconds(0) : handshake_timeout);
  if (t->below_->open() && !failed) {
    t->update_reading();
    t->engine_.start();
    t->flush(false, {});
  }
  return p;
}

void TlsTransport::close() noexcept {
  if (closing_) return;
  closing_ = true;
  open_ = false;
  uv::close(timer_);
  // The TCP transport's on_closed() comes back here and frees this.
  below_.reset();
}

void TlsTransport::update_reading() {
  if (closing_ || !below_ || eof_below_) return;
  below_->set_reading(!open_ || user_reading_);
}

void TlsTransport::set_reading(bool on) noexcept {
  user_reading_ = on;
  update_reading();
  // Plaintext already inside the engine comes up on a loop turn of its own
  // (never from inside the user's call).
  if (on && open() && timer_ && (engine_.has_buffered_input() || eof_below_)) {
    uv::timer_start(timer_.get(), 0, 0);
  }
}

Handed TlsTransport::flush(bool user_unit, WriteHints hints) {
  if (engine_.pending_output() == 0 || !below_) return Handed{};
  // The unit's bytes must not move once below has them: a list keeps its
  // elements in place, and the string is filled where it stays.
  Unit& u = units_.emplace_back(Unit{std::string(), user_unit});
  engine_.take_output(u.bytes);
  const std::string_view v = u.bytes;
  const Handed h = below_->write(std::span<const std::string_view>(&v, 1), hints);
  if (h.error != 0 || h.queued == 0) units_.pop_back();
  return h;
}

void TlsTransport::handshake_failed(int status, std::string why) {
  if (open_ || !failure_.empty() || closing_) return;
  failure_ = why.empty() ? "handshake failed" : std::move(why);
  flush(false, {.last = true});  // the alert, if the engine made one
  if (below_) below_->set_reading(false);
  if (on_failure_) on_failure_(failure_);
  if (!closing_ && user_ != nullptr) user_->on_open(status);
}

void TlsTransport::handshake_progress() {
  flush(false, {});
  if (closing_) return;
  switch (engine_.state()) {
    case tls::Engine::State::Handshaking:
      return;
    case tls::Engine::State::Open:
    case tls::Engine::State::Closed:
      open_ = true;
      if (timer_) uv_timer_stop(&timer_->raw);
      update_reading();
      if (user_ != nullptr) user_->on_open(0);
      if (!closing_) deliver();
      return;
    case tls::Engine::State::Failed:
      handshake_failed(UV_EPROTO, engine_.error());
      return;
  }
}

void TlsTransport::deliver() {
  if (delivering_ || closing_ || !open_ || user_ == nullptr) return;
  delivering_ = true;
  thread_local char plain[kPlainChunk];
  while (!closing_ && user_reading_) {
    const size_t budget = std::min(user_->read_budget(), sizeof plain);
    if (budget == 0) break;
    const size_t n = engine_.read(plain, budget);
    if (n == 0) break;
    user_->on_read(std::string_view(plain, n));
  }
  delivering_ = false;
  if (closing_) return;
  // Reading may have made output (a KeyUpdate's answer, a close_notify's).
  flush(false, {});
  if (closing_) return;
  if (engine_.state() == tls::Engine::State::Failed) {
    user_->on_error(UV_EPROTO);
    return;
  }
  // A peer that ends the TCP stream without close_notify ends it all the
  // same: HTTP's own framing says whether an answer was cut short.
  const bool ended = engine_.state() == tls::Engine::State::Closed ||
                     (eof_below_ && !engine_.has_buffered_input());
  if (ended && !eof_told_ && user_reading_) {
    eof_told_ = true;
    user_->on_eof();
    return;
  }
  update_reading();
}

Handed TlsTransport::write(std::span<const std::string_view> bufs, WriteHints hints) noexcept {
  if (!open()) return Handed{.error = UV_ENOTCONN};
  if (bufs.size() > kMaxWriteBufs) return Handed{.error = UV_EINVAL};
  size_t total = 0;
  for (const std::string_view b : bufs) {
    for (size_t done = 0; done < b.size();) {
      const size_t n = engine_.write(b.substr(done));
      if (n == 0) return Handed{.error = UV_EPROTO};
      done += n;
    }
    total += b.size();
  }
  if (total == 0) return Handed{};
  if (hints.last) engine_.close();
  const Handed h = flush(true, hints);
  if (h.error != 0) return Handed{.error = h.error};
  return h.queued > 0 ? Handed{.queued = total} : Handed{.now = total};
}

Handed TlsTransport::send_file(int fd, uint64_t offset, uint64_t length,
                               WriteHints hints) noexcept {
  if (!open()) return Handed{.error = UV_ENOTCONN};
  if (length == 0) return Handed{};
  // Bounded: at most kMaxUnits chunks of ciphertext wait for the kernel.
  if (units_.size() >= kMaxUnits) {
    waiting_ = true;
    return Handed{.wait = true};
  }
  // noexcept: an allocation that fails is this write's error, not terminate().
  thread_local std::unique_ptr<char[]> chunk;
  if (!chunk) chunk.reset(new (std::nothrow) char[kFileChunk]);
  if (!chunk) return Handed{.error = UV_ENOMEM};
  const size_t want = static_cast<size_t>(std::min<uint64_t>(length, kFileChunk));
  ssize_t got;
  do {
    got = ::pread(fd, chunk.get(), want, static_cast<off_t>(offset));
  } while (got < 0 && errno == EINTR);
  if (got <= 0) {
    return Handed{.error = got == 0 ? UV_EOF : uv_translate_sys_error(errno), .file_error = true};
  }
  const size_t n = static_cast<size_t>(got);
  const bool rest = n < length;
  for (size_t done = 0; done < n;) {
    const size_t w = engine_.write(std::string_view(chunk.get() + done, n - done));
    if (w == 0) return Handed{.error = UV_EPROTO};
    done += w;
  }
  if (!rest && hints.last) engine_.close();
  const Handed h = flush(true, {.more = rest || hints.more, .last = !rest && hints.last});
  if (h.error != 0) return Handed{.error = h.error};
  return h.queued > 0 ? Handed{.queued = n} : Handed{.now = n};
}

bool TlsTransport::peer_address(sockaddr_storage& out) const noexcept {
  return below_ && below_->peer_address(out);
}

// ---- from the TCP transport below ----

void TlsTransport::on_open(int status) noexcept {
  if (closing_) return;
  if (status < 0) {
    if (user_ != nullptr) user_->on_open(status);
    return;
  }
  update_reading();
  engine_.start();
  handshake_progress();
}

void TlsTransport::on_read(std::string_view data) noexcept {
  if (closing_) return;
  engine_.receive(data);
  if (!open_) {
    handshake_progress();
  } else {
    deliver();
  }
}

void TlsTransport::on_eof() noexcept {
  if (closing_) return;
  eof_below_ = true;
  if (!open_) {
    handshake_failed(UV_ECONNRESET, "the peer closed the connection during the handshake");
  } else {
    deliver();
  }
}

void TlsTransport::on_error(int status) noexcept {
  if (closing_) return;
  if (!open_) {
    handshake_failed(status, uv_strerror(status));
  } else if (user_ != nullptr) {
    user_->on_error(status);
  }
}

void TlsTransport::on_write_done(int status) noexcept {
  if (closing_ || units_.empty()) return;
  const bool user_unit = units_.front().user;
  units_.pop_front();
  if (user_ == nullptr) return;
  if (user_unit) {
    user_->on_write_done(status);
  } else if (status < 0) {
    user_->on_error(status);
  }
  if (!closing_ && waiting_ && units_.size() < kMaxUnits) {
    waiting_ = false;
    user_->on_writable();
  }
}

void TlsTransport::on_writable() noexcept {
  if (!closing_ && user_ != nullptr) user_->on_writable();
}

size_t TlsTransport::read_budget() const noexcept {
  if (!open_) return kHandshakeRead;
  if (!user_reading_ || user_ == nullptr) return 0;
  return std::min(user_->read_budget(), kPlainChunk);
}

void TlsTransport::on_closed() noexcept {
  timer_.reset();
  if (user_ != nullptr) user_->on_closed();
  delete this;
}

}  // namespace cdn::net
