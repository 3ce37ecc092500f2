// SPDX-License-Identifier: MIT
// An HTTP/1.1 server on libuv: listeners, connections, limits, drain.
//
// Glossary and ownership (after knot-resolver's session2.h):
// - Server: owns its listeners and the set of live connections. Lives on the
//   loop thread; the daemon owns it and must call close() and run the loop
//   until closed() before destroying it.
// - Connection (server.cc): the adapter of one accepted connection between
//   its Transport (transport.hpp; TcpTransport) and an http::ServerConnection,
//   which holds all of the protocol state (common/http/connection.hpp). The
//   adapter hands what the transport reads to the core, hands the core's
//   output plan to the transport (buffers, file ranges), feeds write
//   completions and timer ticks back, and drops the transport when the core
//   says Closed. Heap-held, never moves; its timer follows
//   common/uv/handle.hpp, and it is freed when the transport says it let go
//   of everything (on_closed, after every write callback). A close asked for
//   inside a callback only marks it.
// - Exchange: the handler's view of one request on a connection: the request,
//   and the calls that answer it. Valid only inside the handler call; later,
//   through a Deferred.
// Requests on a connection are answered strictly in order (pipelining); a
// response that streams a file holds the next request back until it is sent.
// A client that pipelines without reading its answers gets a bounded share:
// the connection holds a few KiB of its input and answers (small answers
// queued behind unsent ones are coalesced into one buffer), then stops reading
// until the client reads; and it answers a bounded number of pipelined
// requests before the loop serves the other connections.
#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/http/connection.hpp"
#include "common/http/message.hpp"
#include "common/http/parser.hpp"
#include "common/http/serialize.hpp"
#include "common/log/burst.hpp"
#include "common/metrics/counter.hpp"
#include "common/net/deadlines.hpp"
#include "common/net/transport.hpp"
#include "common/uv/handle.hpp"

namespace cdn::net {

class Connection;
class H2Link;

// One answered request as the server saw it, for access logs and metrics:
// handed to ServerOptions::on_complete once per response, on the loop
// thread, when the answer is queued whole (a file: when its last byte went
// to the kernel, or the connection closed before that). The views and the
// request are valid only during the call.
struct RequestRecord {
  const http::Request& request;  // method empty when the request line did not parse
  const sockaddr* peer;          // null when the kernel no longer knows it
  std::string_view client;       // the peer's IP address, without port
  int status = 0;
  uint64_t body_bytes = 0;                // body bytes sent (not the head; 0 for HEAD)
  std::chrono::microseconds duration{0};  // request head parsed -> answer queued/sent
  std::string_view cache;                 // what the handler noted (Exchange::note_cache)
  std::string_view upstream;              // what the handler noted (Exchange::note_upstream)
  bool whole = true;  // false: the connection closed before the body was all sent
};

// What the servers of one process's workers share: max_connections is the
// daemon's, not each worker's, and the descriptors are the process's, so a
// shortage is one, logged once for all. Any thread.
struct ServerGroup {
  std::atomic<uint64_t> connections{0};  // open, over every server of the group
  std::mutex mu;                         // guards fd_shortage
  log::Burst fd_shortage{std::chrono::seconds(10), std::chrono::seconds(1)};
  std::atomic<bool> short_of_fds{false};  // fd_shortage.active(), read without mu
};

struct ServerOptions {
  uint32_t max_connections = 10000;
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds send_timeout{60'000};
  http::Limits limits;
  std::string server_header = "cdn";
  // Called for every answered request (see RequestRecord); may be empty.
  std::function<void(const RequestRecord&)> on_complete;
  // What the servers of several workers share; null: a group of its own.
  // Taken when the server is made (set_options keeps it).
  std::shared_ptr<ServerGroup> group;
  // Servers of this process that accept on loops of their own (the
  // workers). Near the descriptor limit each may hold one accepted
  // connection back (see server.cc), so a server stops accepting while
  // fewer descriptors than this are free: another's accept must never fail
  // (libuv would then accept and close connections unseen).
  uint32_t accepting_servers = 1;
};

// Written by the server's loop thread only; read from any (the daemon's
// pages add up the stats of every worker).
struct ServerStats {
  metrics::OwnCounter active_connections = 0;
  metrics::OwnCounter connections_total = 0;
  metrics::OwnCounter requests_total = 0;
  metrics::OwnCounter bytes_sent = 0;      // response bytes handed to the kernel
  metrics::OwnCounter rejected_total = 0;  // connections refused over max_connections
  metrics::OwnCounter errors_total = 0;    // requests answered 4xx by the framing layer
  // Connections whose client sends requests faster than it reads the answers
  // (pipelining, not reading): past what a connection may hold for it (see
  // server.cc) it is not read until the client takes some answers.
  metrics::OwnCounter backlogged_connections = 0;  // now
  metrics::OwnCounter backlogged_total = 0;        // times a connection was stopped so
  // File bytes read into user space (pread + write) rather than sent with
  // sendfile: 0 unless sendfile is refused or the head is still queued.
  metrics::OwnCounter file_bytes_copied = 0;
  // HTTP/2 (h2_link.hpp): connections that spoke it (ALPN h2 or h2c prior
  // knowledge), and their streams handed to the handler.
  metrics::OwnCounter h2_connections_total = 0;
  metrics::OwnCounter h2_streams_total = 0;
  metrics::OwnCounter h2_resets_total = 0;  // streams reset by the client
};

class Exchange;
class Deferred;

// The answering calls of an Exchange carried by another protocol than the
// connection's HTTP/1.1 core: an HTTP/2 stream (h2_link.hpp). Same meaning
// as Exchange's calls of the same names.
class ExchangeImpl {
 public:
  virtual const http::Request& request() const = 0;
  virtual bool is_head() const = 0;
  virtual void note_cache(std::string_view status) = 0;
  virtual void note_upstream(std::string_view upstream) = 0;
  virtual http::HeadWriter& begin(int status, bool relayed) = 0;
  virtual void interim(int status, const std::vector<http::Header>& headers) = 0;
  virtual void finish(std::string_view body, std::shared_ptr<const void> owner) = 0;
  virtual void finish_file(int fd, uint64_t offset, uint64_t length,
                           std::shared_ptr<const void> owner) = 0;
  virtual Deferred defer(std::function<void()> on_gone) = 0;
  virtual void start_stream(bool chunked) = 0;
  virtual bool send_piece(std::string_view piece) = 0;
  virtual void end_stream() = 0;
  virtual bool streaming() const = 0;
  virtual bool send_file_piece(int fd, uint64_t offset, uint64_t length,
                               std::shared_ptr<const void> owner) = 0;
  virtual bool stream_ready() const = 0;
  virtual void when_writable(std::function<void()> fn) = 0;
  virtual void cut_stream() = 0;

 protected:
  ~ExchangeImpl() = default;
};

// A response promised for later (e.g. after an origin fetch). Holds the
// connection weakly, and the number of its request on it: exchange() is null
// once the client went away or that request was answered (a second answer for
// it cannot become the answer to the next request). The connection takes no
// further request until the deferred answer is finished.
class Deferred {
 public:
  Deferred() = default;
  Exchange* exchange() const;

 private:
  friend class Exchange;
  friend class H2Link;
  Deferred(std::weak_ptr<Connection*> c, uint64_t seq) : conn_(std::move(c)), seq_(seq) {}
  // An HTTP/2 stream's: points at nothing once its answer is done or it closed.
  explicit Deferred(std::weak_ptr<Exchange*> stream) : stream_(std::move(stream)) {}
  std::weak_ptr<Connection*> conn_;
  std::weak_ptr<Exchange*> stream_;
  uint64_t seq_ = 0;
};

class Exchange {
 public:
  const http::Request& request() const;
  const std::string& peer() const;
  // The peer's socket address (for allow-lists); null when the kernel no
  // longer knows it (the client went away).
  const sockaddr* peer_address() const;
  bool is_head() const;
  // The request came on a listener with a transport layer (the [tls] port):
  // what the balancer keeps when it sends the client on (https://).
  bool secure() const;

  // What the access log says of this answer besides what the server knows:
  // the cache's verdict and, for the balancer, where the client was sent.
  // Copied; the last call wins.
  void note_cache(std::string_view status);
  void note_upstream(std::string_view upstream);

  // Starts the response: status line, Date, Server and, when this is the
  // connection's last response, "Connection: close". Add headers to the
  // returned writer, then call exactly one finish*(). `relayed`: a
  // gateway's answer from upstream, which brings its own Date and Server
  // (the caller adds a Date when upstream had none, RFC 9110 6.6.1).
  http::HeadWriter& begin(int status, bool relayed = false);
  // An interim response ahead of the final one (RFC 9110 15.2), e.g. a
  // gateway's relayed 103 Early Hints: sent at once, before begin(); ignored
  // for HTTP/1.0 clients (they know no 1xx) and once the answer has begun.
  void interim(int status, const std::vector<http::Header>& headers);
  // Ends the head and sends `body` (not for HEAD requests, whose
  // Content-Length still describes the body). The bytes are copied unless
  // `owner` keeps them alive until written.
  void finish(std::string_view body = {}, std::shared_ptr<const void> owner = nullptr);
  // Ends the head and streams `length` bytes of `fd` from `offset`; takes
  // ownership of fd (closed when done, also for HEAD). `owner` is let go
  // when fd is closed (the edge cache counts an evicted body's blocks until
  // the last descriptor of it closes).
  void finish_file(int fd, uint64_t offset, uint64_t length,
                   std::shared_ptr<const void> owner = nullptr);

  // Answer later: the handler returns without finishing, and calls
  // finish*() through the Deferred's exchange() when it has the answer.
  Deferred defer();
  // The same, for an answer that is worth nothing once its client left (a
  // gateway waiting on its origin): `on_gone` runs once, on the loop thread,
  // when the connection closes before the answer has begun, and the client
  // shutting its side counts as leaving (as nginx's default
  // proxy_ignore_client_abort off), so that its connection is released at
  // once rather than held in CLOSE-WAIT until the origin answers. `on_gone`
  // may be called from inside any call that closes the connection: it
  // should only note the departure and act on a later loop turn.
  Deferred defer(std::function<void()> on_gone);

  // A body sent in pieces over time (an event stream, e.g. the replica's
  // status watch), on a deferred exchange of an HTTP/1.1 request:
  // start_stream() ends the head with "Transfer-Encoding: chunked" and sends
  // it; each send_piece() is one chunk; end_stream() sends the last chunk and
  // the connection moves on to the next request. send_piece() answers false
  // when the piece was not sent: no stream, or the client has not taken the
  // previous pieces (its socket is full), in which case the caller ends the
  // stream rather than queue without bound.
  // `chunked` false: the caller put a Content-Length in the head and sends
  // exactly that many bytes (HTTP/1.0 clients too).
  void start_stream(bool chunked = true);
  bool send_piece(std::string_view piece);
  void end_stream();
  bool streaming() const;
  // A body that grows in a file while it is sent (the edge cache's fill,
  // read while its writer writes): one range of `fd`, sent with sendfile,
  // which `owner` keeps open. False when the stream cannot take it now
  // (what came before is not sent yet): then when_writable() says when.
  bool send_file_piece(int fd, uint64_t offset, uint64_t length, std::shared_ptr<const void> owner);
  bool stream_ready() const;
  // `fn` runs once, on this connection's loop, when the stream can take a
  // piece again; dropped when the connection closes.
  void when_writable(std::function<void()> fn);
  // The stream cannot be completed: the connection closes after what was
  // sent, so the client sees a body cut short, never one that looks whole.
  void cut_stream();

  // A complete short answer: status, Content-Type text/plain, the text as body.
  void reply(int status, std::string_view text,
             std::initializer_list<std::pair<std::string_view, std::string_view>> headers = {});

 private:
  friend class Connection;
  friend class H2Link;
  explicit Exchange(Connection& c, ExchangeImpl* impl = nullptr) : conn_(c), impl_(impl) {}
  Connection& conn_;    // the connection (peer, address), also for an HTTP/2 stream
  ExchangeImpl* impl_;  // null: the connection's HTTP/1.1 core answers
};

class Server {
 public:
  using Handler = std::function<void(Exchange&)>;

  Server(uv_loop_t* loop, ServerOptions options, Handler handler);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // How a listener shares its port with other workers' servers.
  enum class Sharing {
    None,   // a socket of its own
    First,  // the port must be free (a plain bind checks, and picks port 0),
            // then it is bound with SO_REUSEPORT for the others to join
    Join,   // SO_REUSEPORT on the port a First bound: the kernel spreads
            // new connections over the sockets
  };
  // Bind and listen; returns a libuv error (<0) or 0. Port 0 picks a free port.
  // `layer`: what goes over each accepted TCP connection before the HTTP
  // core (TLS: the daemon's tls_layer); none: plain HTTP.
  int listen(const std::string& address, uint16_t port, Sharing sharing = Sharing::None,
             TransportLayer layer = {});
  // Serve on an already listening socket (socket activation). Takes the
  // descriptor; workers sharing a socket each adopt a dup of it.
  int adopt(int fd, TransportLayer layer = {});
  // The bound port of the first listener (after listen on port 0).
  uint16_t port() const;
  uv_loop_t* loop() const { return loop_; }

  // Apply new options (reload): limits to new requests, timeouts to every
  // connection from its next deadline on (the cores read the server's).
  void set_options(ServerOptions options);
  const ServerOptions& options() const { return options_; }

  // Graceful stop: close the listeners (new connections are refused), close
  // idle connections, let the others finish their current response, then
  // close them; `on_drained` runs once no connection is left, on a loop turn
  // of its own (never from inside a connection's callback, whose frames
  // would still be on the stack when the daemon stops).
  void drain(std::function<void()> on_drained);
  // Immediate stop: close every connection and listener.
  void close();
  bool draining() const { return draining_; }
  bool closed() const { return listeners_.empty() && connections_ == nullptr; }

  // A copy; may be called from any thread (each figure has one writer).
  ServerStats stats() const;

 private:
  friend class Connection;
  friend class Exchange;
  friend class H2Link;
  struct Listener;
  // The listening socket is readable: accepts at most kAcceptBatch.
  void on_listener(Listener& l, int status);
  void accept_one(Listener& l, int fd);
  // Out of descriptors: true when the next accept could take the last one
  // (or the last another worker needs); logs once per burst.
  bool out_of_descriptors(int listener_fd);
  // Stops polling `l` until a connection of ours closes or, with other
  // accepting servers (or after an error), kWaitingRetry passed.
  void pause_listener(Listener& l, bool retry_by_timer);
  // Polls every paused listener again.
  void resume_waiting();
  void connection_closed(Connection* c);
  // The connections' deadlines, behind one timer (a handle per connection
  // cost an idle one a quarter of a KiB).
  void schedule(DeadlineHeap::Node& n, uint64_t due);
  void unschedule(DeadlineHeap::Node& n);
  void arm_deadlines();
  void on_deadlines();
  void maybe_drained();
  // Connections that yielded after their share of pipelined answers resume
  // from an idle handle, i.e. once the loop has polled the others.
  void add_ready(Connection* c);
  void remove_ready(Connection* c);
  void on_ready();
  // Listens on `fd` (a bound or inherited socket, taken) or, with `rc` < 0,
  // only closes it and returns rc.
  int start_listener(int fd, int rc, TransportLayer layer);
  // "Date: ...\r\nServer: ...\r\n", rebuilt once a second (and on reload):
  // every response starts with it.
  const std::string& common_headers();

  uv_loop_t* loop_;
  ServerOptions options_;
  Handler handler_;
  // A listening socket, accepted from by our own loop (not uv_listen, which
  // accepts every pending connection in one wake: with workers sharing one
  // inherited socket, one worker took a whole burst). Freed with the server
  // or on drain; the poll handle's close callback closes the socket.
  struct Listener {
    int fd = -1;
    uv::Ptr<uv_poll_t> poll;
    TransportLayer layer;  // empty: plain TCP
    // Not polled for want of descriptors (or after an accept error): new
    // clients wait in the kernel's backlog until it resumes.
    bool paused = false;
  };
  std::vector<std::unique_ptr<Listener>> listeners_;
  bool waiting_ = false;  // some listener is paused
  // With other accepting servers, whose closing connections free
  // descriptors this one is not told of, or after an accept error: tries
  // the waiting listener again every kWaitingRetry while there is one.
  uv::Ptr<uv_timer_t> waiting_timer_;
  uint64_t nofile_ = 0;                // RLIMIT_NOFILE's soft limit when we started listening
  Connection* connections_ = nullptr;  // intrusive doubly linked list
  Connection* ready_ = nullptr;        // yielded connections, doubly linked too
  Connection* resuming_ = nullptr;     // those on_ready is resuming (detached from ready_)
  uv::Ptr<uv_idle_t> ready_idle_;      // made on first use, closed by close()
  DeadlineHeap deadlines_;
  uv::Ptr<uv_timer_t> deadline_timer_;  // made on first use, closed by close()
  uint64_t deadline_timer_due_ = 0;
  // Counted here and by the connections' cores; stats() adds them up.
  ServerStats stats_;
  http::ConnectionStats conn_stats_;
  http::ConnectionOptions conn_options_;  // from options_, for new connections
  std::shared_ptr<ServerGroup> group_;    // see ServerOptions (never null)
  bool draining_ = false;
  std::function<void()> on_drained_;
  uv::Ptr<uv_timer_t> drained_timer_;  // runs on_drained_ (see drain())
  std::string common_headers_;
  uint64_t date_second_ = 0;
};

}  // namespace cdn::net
