// SPDX-License-Identifier: MIT
#include "common/net/tls.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <iterator>
#include <new>

#include "common/net/tcp.hpp"

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

namespace {
// A connected loopback TCP socket (the client end; the others are closed),
// or -1 with errno set. Blocking: loopback connects at once.
int loopback_connected() {
  const int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int c = -1;
  if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(l, 1) == 0 &&
      ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c >= 0 && ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      const int e = errno;
      ::close(c);
      c = -1;
      errno = e;
    }
  }
  const int e = errno;
  if (c >= 0) {
    const int s = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    if (s >= 0) ::close(s);
  }
  ::close(l);
  errno = e;
  return c;
}
}  // namespace

tls::KtlsProbe TlsTransport::probe_ktls() {
  tls::KtlsProbe p;
#ifndef OPENSSL_NO_KTLS
  p.openssl = true;
#endif
  const int fd = loopback_connected();
  if (fd < 0) {
    p.ulp_errno = errno;
    return p;
  }
  static constexpr char kUlp[] = "tls";
  p.ulp = ::setsockopt(fd, SOL_TCP, TCP_ULP, kUlp, sizeof kUlp - 1) == 0;
  if (!p.ulp) p.ulp_errno = errno;
  ::close(fd);
  return p;
}

TlsTransport::KtlsCounts& TlsTransport::ktls_counts() {
  static KtlsCounts counts;
  return counts;
}

TlsTransport::TlsTransport(uv_loop_t* loop, Ptr below, tls::Engine engine)
    : loop_(loop), below_(std::move(below)), engine_(std::move(engine)) {}

void TlsTransport::start_timer(std::chrono::milliseconds timeout) {
  if (!timer_)
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
                                    std::chrono::milliseconds handshake_timeout, bool ktls) {
  if (!below) return nullptr;
  // Only the TCP transport has a socket to give OpenSSL.
  auto* tcp = ktls ? dynamic_cast<TcpTransport*>(below.get()) : nullptr;
  const int fd = tcp != nullptr ? tcp->socket() : -1;
  auto* t = new TlsTransport(loop, std::move(below), tls::Engine::server(std::move(context), fd));
  Ptr p(t);
  t->server_side_ = true;
  t->tcp_ = fd >= 0;
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
  if (on_failure) t->failure_.reset(new Failure{std::string(), std::move(on_failure)});
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
  if (kernel_) ktls_counts().kernel_open.fetch_sub(1, std::memory_order_relaxed);
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
  if (on && open() && (engine_.has_buffered_input() || eof_below_)) {
    start_timer(std::chrono::milliseconds(0));
  }
}

Handed TlsTransport::flush(bool user_unit, WriteHints hints) {
  if (engine_.pending_output() == 0 || !below_) return Handed{};
  // The unit's bytes must not move once below has them: a unit stays where
  // it is made, and the string is filled where it stays.
  Unit* const prev = last_unit_;
  std::unique_ptr<Unit>& slot = prev != nullptr ? prev->next : units_;
  slot = std::make_unique<Unit>();
  Unit& u = *slot;
  u.user = user_unit;
  last_unit_ = &u;
  engine_.take_output(u.bytes);
  const std::string_view v = u.bytes;
  const Handed h = below_->write(std::span<const std::string_view>(&v, 1), hints);
  if (h.error != 0 || h.queued == 0) {
    slot.reset();
    last_unit_ = prev;
  }
  return h;
}

bool TlsTransport::units_below_max() const {
  size_t n = 0;
  for (const Unit* u = units_.get(); u != nullptr && n < kMaxUnits; u = u->next.get()) ++n;
  return n < kMaxUnits;
}

TcpTransport* TlsTransport::handshake_socket() const {
  return tcp_ ? static_cast<TcpTransport*>(below_.get()) : nullptr;
}

const std::string& TlsTransport::failure() const {
  static const std::string kNone;
  return failure_ ? failure_->why : kNone;
}

void TlsTransport::handshake_failed(int status, std::string why) {
  if (open_ || !failure().empty() || closing_) return;
  if (!failure_) failure_ = std::make_unique<Failure>();
  failure_->why = why.empty() ? "handshake failed" : std::move(why);
  if (TcpTransport* tcp = handshake_socket(); watching_ && tcp != nullptr) {
    tcp->watch_writable(false);
  }
  watching_ = false;
  flush(false, {.last = true});  // the alert, if the engine made one
  if (below_) below_->set_reading(false);
  if (failure_->tell) failure_->tell(failure_->why);
  if (!closing_ && user_ != nullptr) user_->on_open(status);
}

void TlsTransport::handshake_progress() {
  flush(false, {});
  if (closing_) return;
  // kTLS: a handshake writing to a full socket goes on once it drains.
  TcpTransport* tcp = handshake_socket();
  if (tcp != nullptr && engine_.wants_writable() != watching_) {
    watching_ = engine_.wants_writable();
    if (!tcp->watch_writable(watching_) && watching_) {
      handshake_failed(UV_EIO, "cannot watch the socket for the handshake");
      return;
    }
  }
  switch (engine_.state()) {
    case tls::Engine::State::Handshaking:
      return;
    case tls::Engine::State::Open:
    case tls::Engine::State::Closed:
      choose_write_path();
      if (closing_) return;
      if (engine_.state() == tls::Engine::State::Failed) {
        handshake_failed(UV_EPROTO, engine_.error());
        return;
      }
      open_ = true;
      // The handshake's deadline is met: an open connection holds no timer
      // of this layer's until a kick needs one (set_reading()).
      uv::close(timer_);
      update_reading();
      if (user_ != nullptr) user_->on_open(0);
      if (!closing_) deliver();
      return;
    case tls::Engine::State::Failed:
      handshake_failed(UV_EPROTO, engine_.error());
      return;
  }
}

void TlsTransport::choose_write_path() {
  if (server_side_) {
    const auto outcome =
        tls::ktls_outcome(tcp_ ? tls::KtlsMode::On : tls::KtlsMode::Off, engine_.version(),
                          engine_.cipher(), engine_.kernel_sends());
    kernel_ = outcome.kernel;
    auto& counts = ktls_counts();
    if (kernel_) {
      counts.kernel_open.fetch_add(1, std::memory_order_relaxed);
      counts.kernel_total.fetch_add(1, std::memory_order_relaxed);
    } else {
      counts.user_total.fetch_add(1, std::memory_order_relaxed);
      if (tcp_) {
        SPDLOG_DEBUG("kTLS not used for a {} {} session: {}", engine_.version(), engine_.cipher(),
                     outcome.why);
      }
    }
  }
  TcpTransport* tcp = handshake_socket();
  if (tcp == nullptr) return;
  if (watching_) tcp->watch_writable(false);
  watching_ = false;
  if (!kernel_) engine_.stop_direct_writes();
  tcp_ = false;
}

void TlsTransport::kernel_close_notify() {
  if (below_units_ > 0) {
    close_notify_owed_ = true;
    return;
  }
  close_notify_owed_ = false;
  engine_.close();  // through the kernel, as a record of its own
}

// What the TCP transport did with plaintext it carries for the kernel's
// records: the units are counted (close_notify waits for them), and the
// last bytes of the connection are followed by close_notify.
Handed TlsTransport::kernel_passed(Handed h, bool last_done) {
  if (h.error != 0 || h.wait) return h;
  if (h.queued > 0) ++below_units_;
  if (last_done) kernel_close_notify();
  return h;
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
  if (kernel_) return kernel_passed(below_->write(bufs, hints), hints.last);
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
  if (kernel_) {
    // sendfile: the kernel reads the file and makes the records.
    const Handed h = below_->send_file(fd, offset, length, hints);
    return kernel_passed(h, hints.last && h.now + h.queued == length);
  }
  // Bounded: at most kMaxUnits chunks of ciphertext wait for the kernel.
  if (!units_below_max()) {
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
  if (closing_) return;
  if (kernel_) {
    if (below_units_ > 0) --below_units_;
    if (close_notify_owed_ && below_units_ == 0 && status >= 0) kernel_close_notify();
    if (user_ != nullptr) user_->on_write_done(status);
    return;
  }
  if (!units_) return;
  const bool user_unit = units_->user;
  std::unique_ptr<Unit> rest = std::move(units_->next);
  units_ = std::move(rest);
  if (!units_) last_unit_ = nullptr;
  if (user_ == nullptr) return;
  if (user_unit) {
    user_->on_write_done(status);
  } else if (status < 0) {
    user_->on_error(status);
  }
  if (!closing_ && waiting_ && units_below_max()) {
    waiting_ = false;
    user_->on_writable();
  }
}

void TlsTransport::on_writable() noexcept {
  if (closing_) return;
  if (!open_) {
    // kTLS: the handshake's socket drained.
    if (watching_ && engine_.state() == tls::Engine::State::Handshaking) {
      engine_.start();
      handshake_progress();
    }
    return;
  }
  if (user_ != nullptr) user_->on_writable();
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
