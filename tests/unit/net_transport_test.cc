// SPDX-License-Identifier: MIT
// The plain TCP transport (common/net/tcp.hpp) over the two ends of a
// socketpair on one loop: bytes and files arrive whole and in order through
// a full socket, the read budget sizes reads, EOF and close are told once,
// a user may drop the transport from inside its callback, and nothing is
// told after close but on_closed.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common/net/tcp.hpp"
#include "common/uv/handle.hpp"

namespace cdn::net {
namespace {

struct Loop {
  uv_loop_t loop{};
  Loop() { uv_loop_init(&loop); }
  ~Loop() { EXPECT_EQ(uv::close_loop(&loop), 0); }
  void run() { uv_run(&loop, UV_RUN_DEFAULT); }
};

// Records what a transport tells; hooks let a test act inside a callback.
struct User final : TransportUser {
  Transport::Ptr t;
  std::string got;
  std::vector<size_t> reads;
  int opened = 1;  // 1: not told yet
  int eofs = 0;
  int errors = 0;
  int writes_done = 0;
  int write_errors = 0;
  int writable = 0;
  int closed = 0;
  size_t budget = 64 * 1024;
  std::function<void()> after_read;
  std::function<void()> after_write;
  std::function<void()> after_writable;
  std::function<void()> after_eof;

  void on_open(int status) noexcept override { opened = status; }
  void on_read(std::string_view data) noexcept override {
    got.append(data);
    reads.push_back(data.size());
    if (after_read) after_read();
  }
  void on_eof() noexcept override {
    ++eofs;
    if (after_eof) after_eof();
  }
  void on_error(int) noexcept override { ++errors; }
  void on_write_done(int status) noexcept override {
    ++writes_done;
    if (status < 0) ++write_errors;
    if (after_write) after_write();
  }
  void on_writable() noexcept override {
    ++writable;
    if (after_writable) after_writable();
  }
  size_t read_budget() const noexcept override { return budget; }
  void on_closed() noexcept override { ++closed; }
};

// Two users on the two ends of a socketpair.
struct Pair {
  User a, b;
  Pair(uv_loop_t* loop, int sndbuf = 0) {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    if (sndbuf > 0) {
      ::setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
      ::setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof sndbuf);
    }
    a.t = TcpTransport::adopt(loop, fds[0]);
    b.t = TcpTransport::adopt(loop, fds[1]);
    EXPECT_TRUE(a.t && b.t);
    a.t->bind(a);
    b.t->bind(b);
  }
};

std::string pattern(size_t n, size_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + seed) % 26);
  return s;
}

TEST(TcpTransport, BytesGoOutAtOnceWhenTheSocketTakesThem) {
  Loop l;
  Pair p(&l.loop);
  ASSERT_TRUE(p.a.t->open());
  const std::string_view bufs[] = {"GET / HTTP/1.1\r\n", "Host: x\r\n", "\r\n"};
  const Handed h = p.a.t->write(bufs, {});
  EXPECT_EQ(h.error, 0);
  EXPECT_EQ(h.now, 27u);
  EXPECT_EQ(h.queued, 0u);
  const std::string_view one[] = {"one buffer"};
  EXPECT_EQ(p.a.t->write(one, {.more = true}).now, 10u);  // MSG_MORE
  p.b.t->set_reading(true);
  p.b.after_read = [&] {
    if (p.b.got.size() == 37) {
      p.a.t.reset();
      p.b.t.reset();
    }
  };
  l.run();
  EXPECT_EQ(p.b.got, "GET / HTTP/1.1\r\nHost: x\r\n\r\none buffer");
  EXPECT_EQ(p.a.closed, 1);
  EXPECT_EQ(p.b.closed, 1);
  EXPECT_EQ(p.a.writes_done, 0);
}

TEST(TcpTransport, AFullSocketQueuesOneUnitPerWriteInOrder) {
  Loop l;
  Pair p(&l.loop, 16 * 1024);
  const std::string big = pattern(1 << 20, 1);
  const std::string small = pattern(100, 2);
  const std::string_view first[] = {big};
  const Handed h1 = p.a.t->write(first, {});
  ASSERT_EQ(h1.error, 0);
  EXPECT_EQ(h1.now + h1.queued, big.size());
  EXPECT_GT(h1.queued, 0u);  // the socket could not take a MiB
  // Behind a unit under way nothing goes at once: it queues, in order.
  const std::string_view second[] = {small};
  const Handed h2 = p.a.t->write(second, {});
  EXPECT_EQ(h2.now, 0u);
  EXPECT_EQ(h2.queued, small.size());
  p.b.t->set_reading(true);
  p.b.after_read = [&] {
    if (p.b.got.size() == big.size() + small.size()) {
      p.a.t.reset();
      p.b.t.reset();
    }
  };
  l.run();
  EXPECT_EQ(p.b.got, big + small);
  EXPECT_EQ(p.a.writes_done, 2);
  EXPECT_EQ(p.a.write_errors, 0);
}

TEST(TcpTransport, ReadsAreSizedByTheBudget) {
  Loop l;
  Pair p(&l.loop);
  const std::string data = pattern(1000, 3);
  const std::string_view bufs[] = {data};
  ASSERT_EQ(p.a.t->write(bufs, {}).now, data.size());
  p.b.budget = 64;
  p.b.t->set_reading(true);
  p.b.after_read = [&] {
    if (p.b.got.size() == data.size()) {
      p.a.t.reset();
      p.b.t.reset();
    }
  };
  l.run();
  EXPECT_EQ(p.b.got, data);
  for (size_t n : p.b.reads) EXPECT_LE(n, 64u);
}

TEST(TcpTransport, ReadingOffStopsReadsUntilOnAgain) {
  Loop l;
  Pair p(&l.loop);
  const std::string_view bufs[] = {"abc"};
  ASSERT_EQ(p.a.t->write(bufs, {}).now, 3u);
  p.b.t->set_reading(true);
  p.b.t->set_reading(false);
  auto timer = uv::make_timer(&l.loop, [&] {
    EXPECT_EQ(p.b.got, "");  // nothing read while off
    p.b.after_read = [&] {
      p.a.t.reset();
      p.b.t.reset();
    };
    p.b.t->set_reading(true);
  });
  uv::timer_start(timer.get(), 20, 0);
  l.run();
  EXPECT_EQ(p.b.got, "abc");
}

TEST(TcpTransport, EofIsToldOnceAndTheUserMayStillWrite) {
  Loop l;
  Pair p(&l.loop);
  const std::string_view req[] = {"request"};
  ASSERT_EQ(p.a.t->write(req, {.last = true}).now, 7u);
  p.a.t.reset();  // the peer closes after its last bytes
  p.b.t->set_reading(true);
  p.b.after_eof = [&] {
    p.b.t->set_reading(true);  // reading again after EOF repeats nothing
    const std::string_view answer[] = {"answer"};
    const Handed h = p.b.t->write(answer, {});
    EXPECT_EQ(h.error, UV_EPIPE);  // the peer is gone: told at once, no SIGPIPE
  };
  auto timer = uv::make_timer(&l.loop, [&] { p.b.t.reset(); });
  uv::timer_start(timer.get(), 30, 0);
  l.run();
  EXPECT_EQ(p.b.got, "request");
  EXPECT_EQ(p.b.eofs, 1);
  EXPECT_EQ(p.b.closed, 1);
}

TEST(TcpTransport, DroppedInsideItsCallbackTellsNothingButOnClosed) {
  Loop l;
  Pair p(&l.loop, 16 * 1024);
  const std::string big = pattern(1 << 20, 4);
  const std::string_view bufs[] = {big};
  const Handed h = p.a.t->write(bufs, {});
  ASSERT_GT(h.queued, 0u);
  p.b.t->set_reading(true);
  p.b.after_read = [&] {
    // The writer goes while its unit is under way: the unit's callback
    // (cancelled) tells it nothing; on_closed comes on a later turn.
    if (p.a.t) {
      p.a.t.reset();
      EXPECT_EQ(p.a.closed, 0);
    }
  };
  p.b.after_eof = [&] { p.b.t.reset(); };
  l.run();
  EXPECT_EQ(p.a.closed, 1);
  EXPECT_EQ(p.a.writes_done, 0);
  EXPECT_EQ(p.a.errors, 0);
  EXPECT_LT(p.b.got.size(), big.size());
  EXPECT_EQ(p.b.closed, 1);
}

struct TempFile {
  std::string path;
  int fd = -1;
  explicit TempFile(const std::string& content) {
    char name[] = "/tmp/cdn-transport-XXXXXX";
    fd = ::mkstemp(name);
    path = name;
    EXPECT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  }
  ~TempFile() {
    ::close(fd);
    ::unlink(path.c_str());
  }
};

// Sends the whole range as a server's adapter does: on `wait`, again at
// on_writable or on_write_done.
struct FilePump {
  User& u;
  int fd;
  uint64_t offset;
  uint64_t left;
  uint64_t copied = 0;
  int waits = 0;
  void pump() {
    while (left > 0 && u.t) {
      const Handed h = u.t->send_file(fd, offset, left, {});
      ASSERT_EQ(h.error, 0);
      if (h.wait) {
        ++waits;
        return;
      }
      offset += h.now + h.queued;
      left -= h.now + h.queued;
      copied += h.queued;
    }
  }
};

TEST(TcpTransport, FileGoesWholeAfterItsHeadThroughAFullSocket) {
  Loop l;
  Pair p(&l.loop, 16 * 1024);
  const std::string content = pattern(3 << 20, 5);
  TempFile f(content);
  const std::string_view head[] = {"HEAD\r\n"};
  ASSERT_EQ(p.a.t->write(head, {.more = true}).now, 6u);
  FilePump pump{p.a, f.fd, 0, content.size()};
  p.a.after_writable = [&] { pump.pump(); };
  p.a.after_write = [&] { pump.pump(); };
  pump.pump();
  EXPECT_GT(pump.waits, 0);  // 3 MiB do not fit: it waited for the socket
  p.b.t->set_reading(true);
  p.b.after_read = [&] {
    if (p.b.got.size() == 6 + content.size()) {
      p.a.t.reset();
      p.b.t.reset();
    }
  };
  l.run();
  EXPECT_EQ(pump.left, 0u);
  ASSERT_EQ(p.b.got.size(), 6 + content.size());
  EXPECT_TRUE(p.b.got == "HEAD\r\n" + content);
  EXPECT_EQ(p.a.errors, 0);
}

TEST(TcpTransport, AFileShorterThanPromisedIsAFileError) {
  Loop l;
  Pair p(&l.loop);
  TempFile f("short");
  const Handed h1 = p.a.t->send_file(f.fd, 0, 100, {});
  EXPECT_EQ(h1.now, 5u);
  const Handed h2 = p.a.t->send_file(f.fd, 5, 95, {});
  EXPECT_EQ(h2.error, UV_EOF);
  EXPECT_TRUE(h2.file_error);
  p.a.t.reset();
  p.b.t.reset();
  l.run();
}

TEST(TcpTransport, ConnectRefusedIsToldByOnOpen) {
  Loop l;
  // A port nothing listens on: bound, never listened.
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
  socklen_t len = sizeof sin;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&sin), &len);
  Address to;
  std::memcpy(&to.storage, &sin, sizeof sin);
  User u;
  u.t = TcpTransport::connect(&l.loop, to, u);
  ASSERT_TRUE(u.t);
  EXPECT_FALSE(u.t->open());
  const std::string_view bufs[] = {"x"};
  EXPECT_EQ(u.t->write(bufs, {}).error, UV_ENOTCONN);
  l.run();
  EXPECT_EQ(u.opened, UV_ECONNREFUSED);
  u.t.reset();
  l.run();
  EXPECT_EQ(u.closed, 1);
  ::close(s);
}

TEST(TcpTransport, ConnectedTransportCarriesBytesBothWays) {
  Loop l;
  uv_tcp_t listener;
  uv_tcp_init(&l.loop, &listener);
  sockaddr_in sin{};
  uv_ip4_addr("127.0.0.1", 0, &sin);
  ASSERT_EQ(uv_tcp_bind(&listener, reinterpret_cast<sockaddr*>(&sin), 0), 0);
  User server;
  listener.data = &server;
  ASSERT_EQ(uv_listen(reinterpret_cast<uv_stream_t*>(&listener), 8,
                      [](uv_stream_t* ls, int) {
                        auto* srv = static_cast<User*>(ls->data);
                        srv->t = TcpTransport::accept(ls);
                        srv->t->bind(*srv);
                        srv->t->set_reading(true);
                      }),
            0);
  int namelen = sizeof sin;
  uv_tcp_getsockname(&listener, reinterpret_cast<sockaddr*>(&sin), &namelen);
  Address to;
  std::memcpy(&to.storage, &sin, sizeof sin);
  User client;
  client.t = TcpTransport::connect(&l.loop, to, client);
  client.after_read = [&] {
    client.t.reset();
    server.t.reset();
    uv_close(reinterpret_cast<uv_handle_t*>(&listener), nullptr);
  };
  server.after_read = [&] {
    sockaddr_storage peer{};
    EXPECT_TRUE(server.t->peer_address(peer));
    const std::string_view pong[] = {"pong"};
    EXPECT_EQ(server.t->write(pong, {}).now, 4u);
  };
  // Runs until on_open, then writes.
  while (client.opened == 1) uv_run(&l.loop, UV_RUN_ONCE);
  ASSERT_EQ(client.opened, 0);
  client.t->set_reading(true);
  const std::string_view ping[] = {"ping"};
  EXPECT_EQ(client.t->write(ping, {}).now, 4u);
  l.run();
  EXPECT_EQ(server.got, "ping");
  EXPECT_EQ(client.got, "pong");
  EXPECT_EQ(client.closed, 1);
  EXPECT_EQ(server.closed, 1);
}

}  // namespace
}  // namespace cdn::net
