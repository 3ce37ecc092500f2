// SPDX-License-Identifier: MIT
#include "common/net/tcp.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <new>
#include <string>
#include <utility>

namespace cdn::net {

namespace {
// The most one read takes (less when the user's budget is smaller).
constexpr size_t kReadBuffer = 64 * 1024;
// Files go out with sendfile(2) while the socket takes them. When it is full,
// the loop waits for it to drain with a uv_poll on a dup of the socket (libuv
// has no "writable" callback for a TCP handle, and one fd cannot carry two
// watchers; epoll tells the dup apart), and sendfile resumes: no file byte is
// copied through user space. Where that poll cannot be set up (dup fails),
// one chunk read with pread goes through uv_write instead, whose callback
// says when the socket drained; that chunk is small so that little is
// copied. Without sendfile (EINVAL/ENOSYS) every chunk is big.
constexpr size_t kFileChunk = 256 * 1024;
constexpr size_t kWakeChunk = 32 * 1024;
constexpr size_t kSendfileMax = 1 << 30;

// libuv's uv_buf_t is struct iovec's layout on Unix (documented), so the
// buffers go to sendmsg as they are.
static_assert(sizeof(uv_buf_t) == sizeof(iovec) &&
              offsetof(uv_buf_t, base) == offsetof(iovec, iov_base) &&
              offsetof(uv_buf_t, len) == offsetof(iovec, iov_len));

}  // namespace

TcpTransport::TcpTransport() = default;

TcpTransport::~TcpTransport() {
  while (free_writes_ != nullptr) {
    delete std::exchange(free_writes_, free_writes_->next_free);
  }
}

TcpTransport* TcpTransport::make(uv_loop_t* loop, int* err) {
  auto* t = new TcpTransport();
  const int rc = uv::init_tcp(loop, t);
  if (err != nullptr) *err = rc;
  if (rc != 0) {
    delete t;  // its handle was never registered with the loop
    return nullptr;
  }
  return t;
}

// The close callback frees this right after: libuv's last use of the socket
// is over, as the write and connect callbacks (cancelled by the close) ran
// before it.
void TcpTransport::closed() noexcept {
  if (user_ != nullptr) user_->on_closed();
}

void TcpTransport::opened() {
  uv_os_fd_t fd = -1;
  if (uv_fileno(base(), &fd) == 0) fd_ = fd;
  open_ = true;
}

Transport::Ptr TcpTransport::accept(uv_stream_t* listener, int* err) {
  TcpTransport* t = make(listener->loop, err);
  if (t == nullptr) return nullptr;
  Ptr p(t);
  const int rc = uv_accept(listener, t->stream());
  if (err != nullptr) *err = rc;
  if (rc != 0) return nullptr;  // p closes it; no user is told
  t->opened();
  return p;
}

Transport::Ptr TcpTransport::connect(uv_loop_t* loop, const Address& to, TransportUser& user,
                                     int* err) {
  TcpTransport* t = make(loop, err);
  if (t == nullptr) return nullptr;
  Ptr p(t);
  // Freed by its callback, which libuv runs (cancelled by a close) before
  // the handle's close callback frees this.
  auto req = std::make_unique<uv_connect_t>();
  req->data = t;
  const int rc = uv_tcp_connect(req.get(), &t->raw, to.sa(), on_connect);
  if (err != nullptr) *err = rc;
  if (rc != 0) return nullptr;
  static_cast<void>(req.release());  // on_connect() frees it
  t->user_ = &user;
  return p;
}

Transport::Ptr TcpTransport::adopt(uv_loop_t* loop, int fd, int* err) {
  TcpTransport* t = make(loop, err);
  if (t == nullptr) {
    ::close(fd);
    return nullptr;
  }
  Ptr p(t);
  const int rc = uv_tcp_open(&t->raw, fd);
  if (err != nullptr) *err = rc;
  if (rc != 0) {
    ::close(fd);
    return nullptr;
  }
  t->opened();
  return p;
}

void TcpTransport::on_connect(uv_connect_t* req, int status) noexcept {
  const std::unique_ptr<uv_connect_t> own(req);
  auto* t = static_cast<TcpTransport*>(req->data);
  if (t->closing_) return;  // cancelled by the close
  if (status == 0) {
    uv_tcp_nodelay(&t->raw, 1);
    t->opened();
  }
  t->user_->on_open(status);
}

void TcpTransport::close() noexcept {
  if (closing_) return;
  closing_ = true;
  open_ = false;
  reading_ = false;
  polling_ = false;
  fd_ = -1;
  uv::close(out_poll_);
  uv::close_handle<uv_tcp_t>(this);  // the close callback frees this
}

void TcpTransport::set_reading(bool on) noexcept {
  if (!open() || on == reading_ || (on && eof_)) return;
  if (on) {
    reading_ = uv_read_start(stream(), on_alloc, on_read) == 0;
  } else {
    uv_read_stop(stream());
    reading_ = false;
  }
}

void TcpTransport::on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) noexcept {
  // One read buffer per thread, not per connection: libuv calls on_read
  // right after this, and the user copies what it keeps before on_read
  // returns. An idle connection costs no buffer at all.
  thread_local std::unique_ptr<char[]> slab(new (std::nothrow) char[kReadBuffer]);
  if (!slab) {
    *buf = uv_buf_init(nullptr, 0);  // UV_ENOBUFS for this read
    return;
  }
  auto* t = static_cast<TcpTransport*>(HandleBase::from(h));
  size_t len = t->user_ != nullptr ? std::min(kReadBuffer, t->user_->read_budget()) : kReadBuffer;
  if (len == 0) len = kReadBuffer;  // not reading any more once this read is in
  *buf = uv_buf_init(slab.get(), static_cast<unsigned>(len));
}

void TcpTransport::on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept {
  auto* t = static_cast<TcpTransport*>(HandleBase::from(reinterpret_cast<uv_tcp_t*>(s)));
  if (t->closing_ || t->user_ == nullptr) return;
  if (nread > 0) {
    t->user_->on_read(std::string_view(buf->base, static_cast<size_t>(nread)));
  } else if (nread == UV_EOF) {
    // libuv stops reading at EOF; reading again would only repeat it.
    t->reading_ = false;
    t->eof_ = true;
    t->user_->on_eof();
  } else if (nread < 0) {
    t->user_->on_error(static_cast<int>(nread));
  }
}

// Writes at once when nothing is under way: a complete write needs no
// request, no callback and no epoll change. What the kernel did not take
// goes on as one uv_write. With `more` or `last` the bytes go with MSG_MORE
// (a head leaves with the first file bytes; the last answer of a connection
// that ends cleanly leaves with the FIN, one packet and one wake-up less for
// the peer). One buffer goes with send(2), which skips the file layer that
// writev(2) goes through.
Handed TcpTransport::write(std::span<const std::string_view> bufs, WriteHints hints) noexcept {
  if (!open()) return Handed{.error = UV_ENOTCONN};
  if (bufs.size() > kMaxWriteBufs) return Handed{.error = UV_EINVAL};
  uv_buf_t b[kMaxWriteBufs];
  size_t total = 0;
  for (size_t i = 0; i < bufs.size(); ++i) {
    b[i] = uv_buf_init(const_cast<char*>(bufs[i].data()), static_cast<unsigned>(bufs[i].size()));
    total += bufs[i].size();
  }
  if (total == 0) return Handed{};
  size_t sent = 0;
  if (units_ == 0) {
    ssize_t n;
    if ((hints.more || hints.last) && !no_sendfile_) {
      msghdr msg{};
      msg.msg_iov = reinterpret_cast<iovec*>(b);
      msg.msg_iovlen = bufs.size();
      do {
        n = ::sendmsg(fd_, &msg, MSG_MORE | MSG_NOSIGNAL | MSG_DONTWAIT);
      } while (n < 0 && errno == EINTR);
      if (n < 0) n = errno == EAGAIN || errno == EWOULDBLOCK ? UV_EAGAIN : -errno;
    } else if (bufs.size() == 1) {
      do {
        n = ::send(fd_, b[0].base, b[0].len, MSG_NOSIGNAL | MSG_DONTWAIT);
      } while (n < 0 && errno == EINTR);
      if (n < 0) n = errno == EAGAIN || errno == EWOULDBLOCK ? UV_EAGAIN : -errno;
    } else {
      n = uv_try_write(stream(), b, static_cast<unsigned>(bufs.size()));
    }
    if (n < 0 && n != UV_EAGAIN) return Handed{.error = static_cast<int>(n)};
    sent = n > 0 ? static_cast<size_t>(n) : 0;
    if (sent == total) return Handed{.now = total};
  }
  unsigned first = 0;
  for (size_t done = sent; done > 0;) {
    const size_t take = std::min<size_t>(done, b[first].len);
    b[first].base += take;
    b[first].len -= static_cast<unsigned>(take);
    done -= take;
    if (b[first].len == 0) ++first;
  }
  const int rc = queue(b + first, static_cast<unsigned>(bufs.size()) - first);
  if (rc != 0) return Handed{.error = rc, .now = sent};
  return Handed{.now = sent, .queued = total - sent};
}

TcpTransport::WriteReq* TcpTransport::take_write() {
  WriteReq* w = free_writes_;
  if (w != nullptr) {
    free_writes_ = w->next_free;
  } else {
    w = new (std::nothrow) WriteReq();
    if (w == nullptr) return nullptr;
  }
  w->owner = this;
  return w;
}

void TcpTransport::release(WriteReq* w) {
  if (units_ == 0) {
    // Nothing else under way: an idle connection holds no request.
    delete w;
    while (free_writes_ != nullptr) delete std::exchange(free_writes_, free_writes_->next_free);
    return;
  }
  w->next_free = free_writes_;
  free_writes_ = w;
}

// uv_write of bufs as one unit; a libuv error when it refuses them.
int TcpTransport::queue(const uv_buf_t* bufs, unsigned n) {
  WriteReq* w = take_write();
  if (w == nullptr) return UV_ENOMEM;
  w->req.data = w;
  const int rc = uv_write(&w->req, stream(), bufs, n, on_write);
  if (rc != 0) {
    release(w);
    return rc;
  }
  ++units_;
  return 0;
}

void TcpTransport::on_write(uv_write_t* req, int status) noexcept {
  auto* w = static_cast<WriteReq*>(req->data);
  TcpTransport* t = w->owner;
  --t->units_;
  t->release(w);
  if (t->closing_ || t->user_ == nullptr) return;  // cancelled by the close
  t->user_->on_write_done(status);
}

Handed TcpTransport::send_file(int fd, uint64_t offset, uint64_t length, WriteHints) noexcept {
  if (!open()) return Handed{.error = UV_ENOTCONN};
  // sendfile does not queue behind the writes under way.
  if (units_ > 0) return Handed{.wait = true};
  if (length == 0) return Handed{};
  if (!no_sendfile_) {
    off_t off = static_cast<off_t>(offset);
    const size_t want = static_cast<size_t>(std::min<uint64_t>(length, kSendfileMax));
    const ssize_t n = ::sendfile(fd_, fd, &off, want);
    if (n > 0) {
      if (static_cast<uint64_t>(n) == length) file_done();
      return Handed{.now = static_cast<size_t>(n)};
    }
    // The file shrank under us: the length promised cannot be kept.
    if (n == 0) return Handed{.error = UV_EOF, .file_error = true};
    if (errno == EINTR) return Handed{};
    if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
      no_sendfile_ = true;  // e.g. a file system without splice support
    } else if (errno != EAGAIN) {
      return Handed{.error = uv_translate_sys_error(errno)};
    } else if (wait_writable()) {
      // Level-triggered: the watch stays on while the file goes on, so a
      // socket that fills again costs no epoll_ctl.
      cork(true);
      return Handed{.wait = true};
    }
  }
  if (!chunk_) chunk_.reset(new (std::nothrow) char[kFileChunk]);
  if (!chunk_) return Handed{.error = UV_ENOMEM};
  const size_t want =
      static_cast<size_t>(std::min<uint64_t>(length, no_sendfile_ ? kFileChunk : kWakeChunk));
  ssize_t got;
  do {
    got = ::pread(fd, chunk_.get(), want, static_cast<off_t>(offset));
  } while (got < 0 && errno == EINTR);
  if (got <= 0) {
    return Handed{.error = got == 0 ? UV_EOF : uv_translate_sys_error(errno), .file_error = true};
  }
  const uv_buf_t buf = uv_buf_init(chunk_.get(), static_cast<unsigned>(got));
  if (const int rc = queue(&buf, 1); rc != 0) return Handed{.error = rc};
  if (static_cast<uint64_t>(got) == length) file_done();
  return Handed{.queued = static_cast<size_t>(got)};
}

bool TcpTransport::wait_writable() {
  if (!out_poll_) {
    const int dup = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) return false;
    out_poll_ = uv::make_poll(raw.loop, dup, [this](int status, int) {
      if (closing_ || user_ == nullptr) return;
      if (status < 0) {
        user_->on_error(status);
      } else {
        user_->on_writable();
      }
    });
    if (!out_poll_) {
      ::close(dup);
      return false;
    }
    // Closing the poll handle takes the dup out of epoll; then it is closed.
    out_poll_->on_closed = [dup] { ::close(dup); };
  }
  if (!polling_) {
    if (uv::poll_start(out_poll_.get(), UV_WRITABLE) != 0) return false;
    polling_ = true;
  }
  return true;
}

bool TcpTransport::watch_writable(bool on) noexcept {
  if (on) return !closing_ && fd_ >= 0 && wait_writable();
  if (polling_) {
    uv_poll_stop(&out_poll_->raw);
    polling_ = false;
  }
  return true;
}

// The range is all handed over: no writable watch, no cork.
void TcpTransport::file_done() {
  if (polling_) {
    uv_poll_stop(&out_poll_->raw);
    polling_ = false;
  }
  cork(false);
}

// A file that fills the socket is sent in small pieces: each wake-up tops the
// socket up with what the peer's ACKs freed, and with TCP_NODELAY every piece
// would leave at once as a short segment (about 20 segments a MiB on loopback
// instead of 16, and more ACKs for the peer to send). Corked, the kernel
// sends full segments only; uncorking at the end of the file sends its tail at
// once. nginx does the same with `tcp_nopush`. Two setsockopt per file that
// fills the socket, none for a file that fits.
void TcpTransport::cork(bool on) {
  if (corked_ == on || fd_ < 0) return;
  const int v = on ? 1 : 0;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_CORK, &v, sizeof v);
  corked_ = on;
}

bool TcpTransport::peer_address(sockaddr_storage& out) const noexcept {
  // Once closed, fd_ is -1: the number may already belong to another socket.
  if (fd_ < 0) return false;
  socklen_t len = sizeof out;
  return ::getpeername(fd_, reinterpret_cast<sockaddr*>(&out), &len) == 0;
}

}  // namespace cdn::net
