// SPDX-License-Identifier: MIT
// cdn-fake-replicas: thousands of replicas in one process, for
// bench/probe-scale. Listens on N loopback addresses (127.77.x.y, all on one
// port, as the seed's servers were) and answers every request with a fixed
// /.cdn/status document over kept-alive connections, or, to a request for a
// status stream (GET /.cdn/status?watch=MS&count=N, what the balancer asks a
// steady replica), the same document as a chunked stream: one at once, then
// one every MS, N in all. Writes the seed-format servers file (one bare host
// a line), then "ready" on standard output.
// On SIGUSR1 it prints "answered A probed P": A status documents sent in all
// (answers and streamed), P replicas that sent at least 3 (enough for the
// balancer's rise), so the
// bench can count probes and wait for every replica without asking the
// balancer (whose /.cdn/metrics for 10,000 replicas costs megabytes of RSS
// that would be counted as the prober's).
// Nothing else: no content, no parsing beyond finding the end of a request
// head, so the figures measured are the balancer's, not this program's.
#include <sys/resource.h>
#include <uv.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

std::string g_response;
uint64_t g_answered = 0;
uint64_t g_probed = 0;
constexpr uint32_t kProbedAfter = 3;

struct Listener {
  uv_tcp_t tcp{};
  uint32_t answered = 0;
};

std::string g_chunk;        // the document as one chunk of a stream
std::string g_stream_head;  // a stream's head

struct Conn {
  uv_tcp_t tcp{};
  uv_timer_t timer{};  // a stream's next document
  int open = 2;        // handles not yet closed
  Listener* listener = nullptr;
  std::string in;
  uint32_t left = 0;     // documents of the stream still to send
  uint64_t every = 0;    // ms between documents
  uint64_t next_at = 0;  // loop time of the next one
};

struct Write {
  uv_write_t req{};
  std::string bytes;
};

void on_closed(uv_handle_t* h) {
  auto* c = static_cast<Conn*>(h->data);
  if (--c->open == 0) delete c;
}

void close_conn(Conn* c) {
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), on_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), on_closed);
}

void on_written(uv_write_t* req, int) { delete reinterpret_cast<Write*>(req); }

void count_documents(Conn* c, size_t n) {
  g_answered += n;
  Listener* l = c->listener;
  if (l->answered < kProbedAfter && l->answered + n >= kProbedAfter) ++g_probed;
  l->answered += static_cast<uint32_t>(n);
}

void send_bytes(Conn* c, std::string bytes) {
  auto* w = new Write();
  w->bytes = std::move(bytes);
  uv_buf_t b = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
  if (uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1, on_written) != 0) {
    delete w;
    close_conn(c);
  }
}

// The number after `name=` in a request head, or 0.
uint64_t param(std::string_view head, std::string_view name) {
  const size_t at = head.find(name);
  if (at == std::string_view::npos) return 0;
  return std::strtoull(head.data() + at + name.size(), nullptr, 10);
}

void on_stream_timer(uv_timer_t* t);

// Each document at its own time from the start of the stream, not `every`
// after the previous one fired: with 10,000 streams the loop runs each timer
// tens of ms late, and a repeating libuv timer counts from that, which made
// "1 Hz" 4% slower.
void arm_stream(Conn* c) {
  c->next_at += c->every;
  const uint64_t now = uv_now(c->timer.loop);
  uv_timer_start(&c->timer, on_stream_timer, c->next_at > now ? c->next_at - now : 0, 0);
}

void on_stream_timer(uv_timer_t* t) {
  auto* c = static_cast<Conn*>(t->data);
  count_documents(c, 1);
  std::string out = g_chunk;
  if (--c->left == 0) {
    out += "0\r\n\r\n";
  } else {
    arm_stream(c);
  }
  send_bytes(c, std::move(out));
}

void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
  static char slab[64 * 1024];
  *buf = uv_buf_init(slab, sizeof slab);
}

void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* c = static_cast<Conn*>(s->data);
  if (n < 0) {
    close_conn(c);
    return;
  }
  c->in.append(buf->base, static_cast<size_t>(n));
  std::string out;
  size_t answers = 0;
  for (size_t end; c->left == 0 && (end = c->in.find("\r\n\r\n")) != std::string::npos;) {
    const std::string_view head(c->in.data(), end);
    const uint64_t ms = param(head.substr(0, head.find('\r')), "watch=");
    const uint64_t count = param(head.substr(0, head.find('\r')), "count=");
    ++answers;
    if (ms > 0 && count > 0) {
      // A stream: the head and the first document now, the rest on the timer.
      out += g_stream_head + g_chunk;
      c->left = static_cast<uint32_t>(count - 1);
      if (c->left == 0) {
        out += "0\r\n\r\n";
      } else {
        c->every = ms;
        c->next_at = uv_now(c->timer.loop);
        arm_stream(c);
      }
    } else {
      out += g_response;
    }
    c->in.erase(0, end + 4);
  }
  if (c->in.size() > 16 * 1024) {  // not HTTP
    close_conn(c);
    return;
  }
  if (answers == 0) return;
  count_documents(c, answers);
  send_bytes(c, std::move(out));
}

void on_connection(uv_stream_t* server, int status) {
  if (status < 0) return;
  auto* c = new Conn();
  c->listener = static_cast<Listener*>(server->data);
  uv_tcp_init(server->loop, &c->tcp);
  uv_timer_init(server->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    close_conn(c);
    return;
  }
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), on_alloc, on_read);
}

std::string address(int i) {
  // 127.77.0.1 .. : 250 hosts per /24, skipping .0 and .255.
  return "127.77." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1);
}

}  // namespace

int main(int argc, char** argv) {
  // FIRST: index of the first address, so several processes (each within
  // its RLIMIT_NOFILE: a listener and a connection per replica) share N.
  if (argc != 4 && argc != 5) {
    (void)std::fprintf(stderr, "usage: %s COUNT PORT SERVERS_FILE [FIRST]\n", argv[0]);
    return 2;
  }
  const int count = std::atoi(argv[1]);
  const int port = std::atoi(argv[2]);
  const int first = argc == 5 ? std::atoi(argv[4]) : 0;
  if (count <= 0 || first < 0 || first + count > 60000 || port <= 0 || port > 65535) {
    (void)std::fprintf(stderr, "FIRST + COUNT in 1..60000, PORT in 1..65535\n");
    return 2;
  }
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);

  const std::string body =
      R"({"name":"fake","source":"root:/fake","state":"serving","active_connections":1,)"
      R"("capacity":1000,"requests_total":1,"bytes_total":0,"bytes_per_second":0,"load":0,)"
      R"("uptime_seconds":1,"version":"fake"})";
  g_response = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\n\r\n" + body;
  char size[16];
  (void)std::snprintf(size, sizeof size, "%zx\r\n", body.size() + 1);
  g_chunk = size + body + "\n\r\n";
  g_stream_head =
      "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
      "Transfer-Encoding: chunked\r\n\r\n";

  uv_loop_t* loop = uv_default_loop();
  std::vector<Listener*> listeners;
  std::ofstream servers(argv[3]);
  for (int i = first; i < first + count; ++i) {
    sockaddr_in sa{};
    uv_ip4_addr(address(i).c_str(), port, &sa);
    auto* l = new Listener();
    uv_tcp_t* tcp = &l->tcp;
    uv_tcp_init(loop, tcp);
    tcp->data = l;
    int rc = uv_tcp_bind(tcp, reinterpret_cast<const sockaddr*>(&sa), 0);
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(tcp), 128, on_connection);
    if (rc != 0) {
      (void)std::fprintf(stderr, "listen %s:%d: %s\n", address(i).c_str(), port, uv_strerror(rc));
      return 1;
    }
    listeners.push_back(l);
    servers << address(i) << "\n";
  }
  servers.close();
  uv_signal_t usr1;
  uv_signal_init(loop, &usr1);
  uv_signal_start(
      &usr1,
      [](uv_signal_t*, int) {
        std::printf("answered %llu probed %llu\n", static_cast<unsigned long long>(g_answered),
                    static_cast<unsigned long long>(g_probed));
        (void)std::fflush(stdout);
      },
      SIGUSR1);
  uv_unref(reinterpret_cast<uv_handle_t*>(&usr1));
  std::printf("ready %d\n", count);
  (void)std::fflush(stdout);
  return uv_run(loop, UV_RUN_DEFAULT);
}
