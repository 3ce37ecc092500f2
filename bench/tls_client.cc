// SPDX-License-Identifier: MIT
// The TLS load of bench/serve's `tls` section, where wrk cannot make it:
//
//   cdn-bench-tls-client handshakes PORT CONNECTIONS SECONDS [full|resume] [PATH]
//     CONNECTIONS connections at once, each: connect, a whole TLS handshake,
//     `GET PATH` with `Connection: close`, read to the end, close; then the
//     next. `full`: no session is ever offered (no ticket asked for either),
//     so every handshake is a full one; `resume`: every connection offers
//     the latest session ticket it was given (the first connection makes
//     it). Prints one line: `handshakes N resumed R errors E seconds S`.
//   cdn-bench-tls-client idle PORT CONNECTIONS
//     Opens CONNECTIONS connections, finishes the handshake of each and sends
//     nothing more; prints `idle N` once all are up, then holds them until
//     standard input closes.
//
// One thread, nonblocking sockets over epoll, OpenSSL on the socket. Only
// 127.0.0.1. A benchmark tool: it does not verify the certificate.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

enum class Phase { Connecting, Handshake, Writing, Reading, Idle };

struct Slot {
  int fd = -1;
  SSL* ssl = nullptr;
  Phase phase = Phase::Connecting;
  size_t written = 0;
};

struct Run {
  int epoll = -1;
  SSL_CTX* ctx = nullptr;
  sockaddr_in addr{};
  bool resume = false;
  bool idle = false;
  std::string request;
  SSL_SESSION* session = nullptr;  // the latest ticket (resume)
  long handshakes = 0, resumed = 0, errors = 0, idle_up = 0;
};

void watch(Run& r, Slot& s, size_t index, uint32_t events, bool add) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = index;
  epoll_ctl(r.epoll, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, s.fd, &ev);
}

void finish(Slot& s) {
  if (s.ssl != nullptr) SSL_free(s.ssl);
  if (s.fd >= 0) close(s.fd);
  s = Slot{};
}

bool start(Run& r, Slot& s, size_t index) {
  s.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (s.fd < 0) return false;
  const int one = 1;
  setsockopt(s.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(s.fd, reinterpret_cast<sockaddr*>(&r.addr), sizeof r.addr) != 0 &&
      errno != EINPROGRESS) {
    close(s.fd);
    s.fd = -1;
    return false;
  }
  s.ssl = SSL_new(r.ctx);
  SSL_set_fd(s.ssl, s.fd);
  SSL_set_connect_state(s.ssl);
  if (r.resume && r.session != nullptr) SSL_set_session(s.ssl, r.session);
  s.phase = Phase::Connecting;
  s.written = 0;
  watch(r, s, index, EPOLLOUT, true);
  return true;
}

// Drives one slot as far as it goes; false when the slot is done (closed).
bool step(Run& r, Slot& s, size_t index) {
  for (;;) {
    int ret = 0;
    switch (s.phase) {
      case Phase::Connecting: {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
          ++r.errors;
          return false;
        }
        s.phase = Phase::Handshake;
        continue;
      }
      case Phase::Handshake:
        ERR_clear_error();
        ret = SSL_do_handshake(s.ssl);
        if (ret == 1) {
          ++r.handshakes;
          if (SSL_session_reused(s.ssl) == 1) ++r.resumed;
          if (r.idle) {
            ++r.idle_up;
            s.phase = Phase::Idle;
            // Nothing more is read: the server's tickets stay in the kernel.
            epoll_ctl(r.epoll, EPOLL_CTL_DEL, s.fd, nullptr);
            return true;
          }
          s.phase = Phase::Writing;
          continue;
        }
        break;
      case Phase::Writing: {
        size_t n = 0;
        ERR_clear_error();
        ret = SSL_write_ex(s.ssl, r.request.data() + s.written, r.request.size() - s.written, &n);
        if (ret == 1) {
          s.written += n;
          if (s.written == r.request.size()) s.phase = Phase::Reading;
          continue;
        }
        break;
      }
      case Phase::Reading: {
        char buf[16384];
        size_t n = 0;
        ERR_clear_error();
        ret = SSL_read_ex(s.ssl, buf, sizeof buf, &n);
        if (ret == 1) continue;
        const int e = SSL_get_error(s.ssl, ret);
        // The end of the answer (the server closes: Connection: close).
        if (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL || e == SSL_ERROR_SSL) {
          // Ended as agreed: without this mark SSL_free() takes the
          // connection for a broken one and spoils its session (the ticket
          // kept for the next connections) as not resumable.
          SSL_set_shutdown(s.ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
          return false;
        }
        break;
      }
      case Phase::Idle:
        return true;
    }
    const int e = SSL_get_error(s.ssl, ret);
    if (e == SSL_ERROR_WANT_READ) {
      watch(r, s, index, EPOLLIN, false);
      return true;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
      watch(r, s, index, EPOLLOUT, false);
      return true;
    }
    ++r.errors;
    return false;
  }
}

int usage() {
  (void)std::fprintf(
      stderr,
      "usage: cdn-bench-tls-client handshakes PORT CONNECTIONS SECONDS [full|resume] "
      "[PATH]\n       cdn-bench-tls-client idle PORT CONNECTIONS\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return usage();
  const std::string mode = argv[1];
  Run r;
  r.idle = mode == "idle";
  if (!r.idle && (mode != "handshakes" || argc < 5)) return usage();
  const int port = std::atoi(argv[2]);
  const size_t connections = static_cast<size_t>(std::atol(argv[3]));
  const double seconds = r.idle ? 0 : std::atof(argv[4]);
  r.resume = !r.idle && argc > 5 && std::strcmp(argv[5], "resume") == 0;
  const std::string path = !r.idle && argc > 6 ? argv[6] : "/4k.html";
  r.request = "GET " + path + " HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
  r.addr.sin_family = AF_INET;
  r.addr.sin_port = htons(static_cast<uint16_t>(port));
  r.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

  r.ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(r.ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(r.ctx, SSL_VERIFY_NONE, nullptr);
  // `resume`: every new session (TLS 1.3's come as tickets after the
  // handshake) replaces r.session, which the next connections offer.
  if (r.resume) {
    SSL_CTX_set_session_cache_mode(r.ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_set_app_data(r.ctx, &r);
    SSL_CTX_sess_set_new_cb(r.ctx, [](SSL* ssl, SSL_SESSION* session) {
      auto* run = static_cast<Run*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
      SSL_SESSION_free(run->session);
      run->session = session;
      return 1;  // kept: its reference is ours
    });
  } else {
    SSL_CTX_set_session_cache_mode(r.ctx, SSL_SESS_CACHE_OFF);
  }
  if (!r.resume) SSL_CTX_set_options(r.ctx, SSL_OP_NO_TICKET);
  // A server that closes without close_notify must not spoil the session.
  SSL_CTX_set_options(r.ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
  static const unsigned char kAlpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(r.ctx, kAlpn, sizeof kAlpn - 1);

  r.epoll = epoll_create1(0);
  std::vector<Slot> slots(connections);
  // `idle` opens its connections a few hundred at a time (a listen backlog
  // would drop a burst of ten thousand SYNs), the next as one is up.
  const size_t burst = r.idle ? std::min<size_t>(connections, 256) : connections;
  size_t next = 0;
  for (; next < burst; ++next) {
    if (!start(r, slots[next], next)) {
      (void)std::fprintf(stderr, "cannot connect (%s)\n", std::strerror(errno));
      return 1;
    }
  }
  const auto t0 = Clock::now();
  const auto end = t0 + std::chrono::duration<double>(seconds);
  std::vector<epoll_event> events(1024);
  bool told = false;
  for (;;) {
    if (r.idle) {
      if (!told && r.idle_up + r.errors >= static_cast<long>(connections)) {
        std::printf("idle %ld errors %ld\n", r.idle_up, r.errors);
        (void)std::fflush(stdout);
        told = true;
        // Held until standard input ends.
        char c;
        while (read(0, &c, 1) > 0) {
        }
        break;
      }
    } else if (Clock::now() >= end) {
      break;
    }
    const int n = epoll_wait(r.epoll, events.data(), static_cast<int>(events.size()), 100);
    for (int k = 0; k < n; ++k) {
      const size_t i = events[k].data.u64;
      Slot& s = slots[i];
      if (s.fd < 0) continue;
      const long up = r.idle_up;
      if (!step(r, s, i)) {
        finish(s);
        // In `idle`, a connection lost before its handshake ended is only
        // counted in errors.
        if (!r.idle && !start(r, s, i)) ++r.errors;
      }
      if (r.idle && (r.idle_up != up || s.fd < 0) && next < connections) {
        if (!start(r, slots[next], next)) ++r.errors;
        ++next;
      }
    }
  }
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!r.idle) {
    std::printf("handshakes %ld resumed %ld errors %ld seconds %.3f\n", r.handshakes, r.resumed,
                r.errors, took);
  }
  for (Slot& s : slots) finish(s);
  SSL_SESSION_free(r.session);
  SSL_CTX_free(r.ctx);
  close(r.epoll);
  return 0;
}
