// SPDX-License-Identifier: MIT
// The TLS transport (common/net/tls.hpp) stacked on the TCP transport, over
// the two ends of a socketpair on one loop: the handshake opens both sides,
// bytes and files arrive whole through a full socket, and a client that
// stalls, sends junk or leaves in the handshake is told as a failed open.
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <span>
#include <string>

#include "common/net/tcp.hpp"
#include "common/net/tls.hpp"
#include "common/uv/handle.hpp"
#include "tests/unit/tls_pki.hpp"

namespace cdn::net {
namespace {

using cdn::testing::pki;
using std::chrono::milliseconds;

struct Loop {
  uv_loop_t loop{};
  Loop() { uv_loop_init(&loop); }
  ~Loop() { EXPECT_EQ(uv::close_loop(&loop), 0); }
  void run() { uv_run(&loop, UV_RUN_DEFAULT); }
};

struct User final : TransportUser {
  Transport::Ptr t;
  std::string got;
  int opened = 1;  // 1: not told yet
  int eofs = 0;
  int errors = 0;
  int writes_done = 0;
  int writable = 0;
  int closed = 0;
  size_t budget = 64 * 1024;
  std::function<void()> after_open;
  std::function<void()> after_read;
  std::function<void()> after_write;
  std::function<void()> after_eof;

  void on_open(int status) noexcept override {
    opened = status;
    if (after_open) after_open();
  }
  void on_read(std::string_view data) noexcept override {
    got.append(data);
    if (after_read) after_read();
  }
  void on_eof() noexcept override {
    ++eofs;
    if (after_eof) after_eof();
  }
  void on_error(int) noexcept override { ++errors; }
  void on_write_done(int) noexcept override {
    ++writes_done;
    if (after_write) after_write();
  }
  void on_writable() noexcept override {
    ++writable;
    if (after_write) after_write();
  }
  size_t read_budget() const noexcept override { return budget; }
  void on_closed() noexcept override { ++closed; }
};

std::shared_ptr<const tls::ServerContext> server_context(bool h2 = false) {
  tls::ServerConfig c;
  c.certificates.push_back({pki().path("a.pem"), pki().path("a.key")});
  c.h2 = h2;
  auto built = tls::ServerContext::build(c, nullptr);
  EXPECT_EQ(built.error, "");
  return built.context;
}

// `h2`: the client offers h2 then http/1.1 by ALPN, as curl --http2 does.
std::shared_ptr<const tls::ClientContext> client_context(bool h2 = false) {
  auto built = tls::ClientContext::build({pki().path("ca.pem"), true});
  EXPECT_EQ(built.error, "");
  if (h2 && built.context) {
    static constexpr unsigned char kAlpn[] = "\x02h2\x08http/1.1";
    EXPECT_EQ(SSL_CTX_set_alpn_protos(built.context->ctx(), kAlpn, sizeof kAlpn - 1), 0);
  }
  return built.context;
}

// A TLS server on one end of a socketpair; the other end is returned raw.
struct Sockets {
  int server = -1;
  int client = -1;
  explicit Sockets(int sndbuf = 0) {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    server = fds[0];
    client = fds[1];
    if (sndbuf > 0) {
      ::setsockopt(server, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
      ::setsockopt(client, SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof sndbuf);
    }
  }
};

std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7) % 26);
  return s;
}

struct Pair {
  User server, client;
  Pair(uv_loop_t* loop, milliseconds timeout = milliseconds(5000), int sndbuf = 0,
       bool ktls = false, bool h2 = false) {
    Sockets s(sndbuf);
    // The first test makes the certificates (openssl, seconds on a busy
    // machine): the handshake timers start from the loop's time after that.
    auto server_ctx = server_context(h2);
    auto client_ctx = client_context(h2);
    uv_update_time(loop);
    server.t = TlsTransport::server(loop, TcpTransport::adopt(loop, s.server),
                                    std::move(server_ctx), timeout, ktls);
    client.t = TlsTransport::client(loop, TcpTransport::adopt(loop, s.client),
                                    std::move(client_ctx), "a.test", timeout);
    server.t->bind(server);
    client.t->bind(client);
  }
};

TEST(TlsTransport, HandshakeOpensBothSidesAndBytesGoBothWays) {
  Loop l;
  Pair p(&l.loop);
  p.server.after_open = [&] { p.server.t->set_reading(true); };
  p.client.after_open = [&] {
    p.client.t->set_reading(true);
    const std::string_view req[] = {"GET / HTTP/1.1\r\n", "Host: a.test\r\n\r\n"};
    EXPECT_EQ(p.client.t->write(req, {}).error, 0);
  };
  const std::string body = pattern(1 << 20);
  p.server.after_read = [&] {
    if (p.server.got.size() < 32) return;
    const std::string_view out[] = {body};
    const Handed h = p.server.t->write(out, {.last = true});
    EXPECT_EQ(h.error, 0);
    EXPECT_EQ(h.now + h.queued, body.size());
  };
  p.client.after_eof = [&] {
    p.client.t.reset();
    p.server.t.reset();
  };
  l.run();
  EXPECT_EQ(p.server.opened, 0);
  EXPECT_EQ(p.client.opened, 0);
  EXPECT_EQ(p.server.got, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
  EXPECT_EQ(p.client.got.size(), body.size());
  EXPECT_TRUE(p.client.got == body);
  EXPECT_EQ(p.client.eofs, 1);  // close_notify after the last write
  EXPECT_EQ(p.server.closed, 1);
  EXPECT_EQ(p.client.closed, 1);
}

// A file holding `content`, removed at the end of the test.
struct TempFile {
  char path[32] = "/tmp/cdn-tls-file-XXXXXX";
  int fd = -1;
  explicit TempFile(const std::string& content) : fd(mkstemp(path)) {
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  }
  ~TempFile() {
    ::close(fd);
    ::unlink(path);
  }
};

// Hands a whole file to a transport's send_file as far as it takes it now;
// called again when the transport says it may take more.
struct FilePump {
  int fd;
  uint64_t size;
  uint64_t offset = 0;
  int waits = 0;
  size_t most_queued = 0;
  void operator()(Transport::Ptr& t) {
    while (offset < size && t) {
      const Handed h = t->send_file(fd, offset, size - offset, {.last = true});
      ASSERT_EQ(h.error, 0);
      if (h.wait) {
        ++waits;
        return;
      }
      EXPECT_LE(h.now + h.queued, TlsTransport::kFileChunk);
      most_queued = std::max(most_queued, h.queued);
      offset += h.now + h.queued;
    }
  }
  // Sends the file from the server of `p` once open (after `first`), the
  // client reading it until close_notify; then both close.
  void serve(Loop& l, Pair& p, std::function<void()> first = {}) {
    p.server.after_open = [&, first] {
      if (first) first();
      (*this)(p.server.t);
    };
    p.server.after_write = [&] { (*this)(p.server.t); };
    p.client.after_open = [&] { p.client.t->set_reading(true); };
    p.client.after_eof = [&] {
      p.client.t.reset();
      p.server.t.reset();
    };
    l.run();
  }
};

TEST(TlsTransport, AFileGoesInBoundedEncryptedChunks) {
  const std::string content = pattern(3 * 1024 * 1024 + 17);
  const TempFile file(content);
  Loop l;
  Pair p(&l.loop, milliseconds(5000), 64 * 1024);
  FilePump pump{file.fd, content.size()};
  pump.serve(l, p);
  EXPECT_EQ(pump.offset, content.size());
  EXPECT_TRUE(p.client.got == content);
  EXPECT_GT(pump.waits, 0);  // the socket filled: the chunks waited, bounded
  EXPECT_GT(pump.most_queued, 0u);
}

// A server that wants kTLS where the kernel will not take it (no tls ULP on
// a Unix socket, nor on these machines at all): its handshake goes straight
// to the socket through OpenSSL, then the connection falls back to the
// engine's own BIO and files still arrive whole, in bounded chunks.
TEST(TlsTransport, KtlsRefusedByTheKernelFallsBackAfterTheHandshake) {
  const std::string content = pattern(2 * 1024 * 1024 + 5);
  const TempFile file(content);
  const auto before = TlsTransport::ktls_counts().user_total.load();
  Loop l;
  Pair p(&l.loop, milliseconds(5000), 64 * 1024, /*ktls=*/true);
  FilePump pump{file.fd, content.size()};
  bool kernel = true;
  pump.serve(l, p, [&] {
    kernel = static_cast<TlsTransport*>(p.server.t.get())->kernel_tls();
    const std::string_view head = "HTTP/1.1 200 OK\r\n\r\n";
    EXPECT_EQ(p.server.t->write(std::span(&head, 1), {.more = true}).error, 0);
  });
  EXPECT_EQ(p.server.opened, 0);
  EXPECT_EQ(p.client.opened, 0);
  EXPECT_FALSE(kernel);
  EXPECT_EQ(pump.offset, content.size());
  EXPECT_TRUE(p.client.got == "HTTP/1.1 200 OK\r\n\r\n" + content);
  EXPECT_EQ(p.client.eofs, 1);  // close_notify, through the engine's BIO again
  EXPECT_GT(pump.waits, 0);
  EXPECT_EQ(TlsTransport::ktls_counts().user_total.load(), before + 1);
  EXPECT_EQ(TlsTransport::ktls_counts().kernel_open.load(), 0u);
}

// HTTP/2 over TLS on a connection that wanted kTLS and fell back: ALPN's
// h2 is seen on both write paths' transport, and the frames (writes) go
// both ways through the engine's own BIO once the handshake is over.
TEST(TlsTransport, KtlsRefusedStillCarriesH2ChosenByAlpn) {
  Loop l;
  Pair p(&l.loop, milliseconds(5000), 0, /*ktls=*/true, /*h2=*/true);
  const std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  const std::string answer = pattern(300 * 1024);
  bool server_h2 = false;
  bool client_h2 = false;
  bool kernel = true;
  p.server.after_open = [&] {
    server_h2 = p.server.t->h2();
    kernel = static_cast<TlsTransport*>(p.server.t.get())->kernel_tls();
    p.server.t->set_reading(true);
  };
  p.client.after_open = [&] {
    client_h2 = p.client.t->h2();
    p.client.t->set_reading(true);
    const std::string_view out[] = {preface};
    EXPECT_EQ(p.client.t->write(out, {}).error, 0);
  };
  p.server.after_read = [&] {
    if (p.server.got.size() < preface.size()) return;
    const std::string_view out[] = {answer};
    EXPECT_EQ(p.server.t->write(out, {.last = true}).error, 0);
  };
  p.client.after_eof = [&] {
    p.client.t.reset();
    p.server.t.reset();
  };
  l.run();
  EXPECT_EQ(p.server.opened, 0);
  EXPECT_EQ(p.client.opened, 0);
  EXPECT_TRUE(server_h2);
  EXPECT_TRUE(client_h2);
  EXPECT_FALSE(kernel);
  EXPECT_EQ(p.server.got, preface);
  EXPECT_TRUE(p.client.got == answer);
  EXPECT_EQ(p.client.eofs, 1);
}

TEST(TlsTransport, AStalledHandshakeTimesOut) {
  Loop l;
  Sockets s;
  User server;
  server.t = TlsTransport::server(&l.loop, TcpTransport::adopt(&l.loop, s.server), server_context(),
                                  milliseconds(100));
  server.t->bind(server);
  // Half a ClientHello, then nothing.
  ASSERT_EQ(::write(s.client, "\x16\x03\x01\x02\x00\x01", 6), 6);
  const uint64_t start = uv_now(&l.loop);
  server.after_open = [&] { server.t.reset(); };
  l.run();
  EXPECT_EQ(server.opened, UV_ETIMEDOUT);
  EXPECT_GE(uv_now(&l.loop) - start, 100u);
  EXPECT_EQ(server.closed, 1);
  ::close(s.client);
}

TEST(TlsTransport, JunkOrALeavingClientFailsTheOpen) {
  for (const std::string& junk : {std::string("GET / HTTP/1.1\r\n\r\n"), std::string("\x16\x03")}) {
    Loop l;
    Sockets s;
    User server;
    server.t = TlsTransport::server(&l.loop, TcpTransport::adopt(&l.loop, s.server),
                                    server_context(), milliseconds(5000));
    server.t->bind(server);
    ASSERT_EQ(::write(s.client, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
    ::shutdown(s.client, SHUT_WR);
    server.after_open = [&] {
      EXPECT_FALSE(static_cast<TlsTransport*>(server.t.get())->failure().empty());
      server.t.reset();
    };
    l.run();
    EXPECT_LT(server.opened, 0);
    EXPECT_EQ(server.closed, 1);
    ::close(s.client);
  }
}

TEST(TlsTransport, ReadingOffHoldsPlaintextUntilOnAgain) {
  Loop l;
  Pair p(&l.loop);
  p.server.after_open = [&] { p.server.t->set_reading(true); };
  p.client.after_open = [&] {
    const std::string_view req[] = {"one", "two", "three"};
    p.client.t->write(req, {});
  };
  uv::Ptr<uv_timer_t> later;
  size_t held = 0;
  p.server.after_read = [&] {
    if (p.server.got.size() >= 3 && !later) {
      p.server.t->set_reading(false);
      held = p.server.got.size();
      later = uv::make_timer(&l.loop, [&] {
        EXPECT_EQ(p.server.got.size(), held);  // nothing came up while off
        p.server.t->set_reading(true);
      });
      uv::timer_start(later.get(), 20, 0);
    }
    if (p.server.got == "onetwothree") {
      p.server.t.reset();
      p.client.t.reset();
      later.reset();
    }
  };
  p.server.budget = 3;
  l.run();
  EXPECT_EQ(p.server.got, "onetwothree");
  EXPECT_EQ(held, 3u);
}

// The handshake's timer goes with the handshake: an open, idle connection
// (10,000 of them in bench/serve's RSS row) holds no timer of this layer's.
// A kick for held plaintext makes one again (ReadingOffHoldsPlaintextUntilOnAgain).
TEST(TlsTransport, AnOpenConnectionHoldsNoTimer) {
  Loop l;
  Pair p(&l.loop);
  auto live_timers = [&] {
    int n = 0;
    uv_walk(
        &l.loop,
        [](uv_handle_t* h, void* arg) {
          if (h->type == UV_TIMER && !uv_is_closing(h)) ++*static_cast<int*>(arg);
        },
        &n);
    return n;
  };
  EXPECT_EQ(live_timers(), 2);  // both handshakes' deadlines
  int seen = -1;
  auto both_open = [&] {
    if (p.server.opened != 0 || p.client.opened != 0) return;
    seen = live_timers();
    p.server.t.reset();
    p.client.t.reset();
  };
  p.server.after_open = both_open;
  p.client.after_open = both_open;
  l.run();
  EXPECT_EQ(seen, 0);
}

TEST(TlsTransport, AClientRefusesACertificateForAnotherName) {
  Loop l;
  Sockets s;
  User server, client;
  std::string why;
  server.t = TlsTransport::server(&l.loop, TcpTransport::adopt(&l.loop, s.server), server_context(),
                                  milliseconds(5000));
  client.t =
      TlsTransport::client(&l.loop, TcpTransport::adopt(&l.loop, s.client), client_context(),
                           "b.test", milliseconds(5000), [&](const std::string& w) { why = w; });
  server.t->bind(server);
  client.t->bind(client);
  client.after_open = [&] {
    client.t.reset();
    server.t.reset();
  };
  l.run();
  EXPECT_LT(client.opened, 0);
  EXPECT_NE(why.find("hostname mismatch"), std::string::npos) << why;
}

}  // namespace
}  // namespace cdn::net
