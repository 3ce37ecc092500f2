// SPDX-License-Identifier: MIT
// What both daemons share about their life under systemd (or a shell):
// signals, readiness, status line, watchdog, reload and graceful drain.
//
// SIGINT/SIGTERM once: STOPPING=1, `drain` is asked to finish in-flight work
// and calls back when done; past drain_timeout, `stop_now`. A second signal:
// `stop_now` at once. SIGHUP: RELOADING=1, `reload`, READY=1. Before
// READY=1 (start-up) neither kills the daemon: see Lifecycle.
// The watchdog is pinged from a loop timer, so a stuck loop stops the pings.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cdn::daemon {

// RLIMIT_NOFILE at start: the soft limit is raised to the hard one (every
// connection is a descriptor, and the usual soft 1024 is far below
// max_connections). `need` is what the daemon may use at its limits:
// max_connections plus a margin for files, listeners, probes, origin
// connections (each daemon works out its own).
struct NofilePlan {
  uint64_t soft = 0;  // the soft limit to set (== the old one: nothing to do)
  bool fits = true;   // need <= soft
};
// Pure: from the current limits. `nr_open` stands in for an unlimited hard
// limit (the kernel refuses a soft limit above fs.nr_open).
NofilePlan plan_nofile(uint64_t soft, uint64_t hard, uint64_t nr_open, uint64_t need);
// Raise the soft limit (one info line with the figures) and warn when `need`
// does not fit. Called at start; check_nofile again on reload, as
// max_connections may have changed.
void raise_nofile_limit(uint64_t need);
void check_nofile(uint64_t need);

struct Hooks {
  // Re-read the configuration; return false when it was refused (the hook
  // has logged why, and the old configuration stays).
  std::function<bool()> reload;
  // Begin a graceful stop; call `done` once nothing is in flight.
  std::function<void(std::function<void()> done)> drain;
  // Close everything now (after drain, on timeout, or on a second signal).
  std::function<void()> stop_now;
  // One line for systemd's STATUS=, asked for every second.
  std::function<std::string()> status_line;
  // The drain bound, read when the signal arrives (it may change on reload).
  std::function<std::chrono::milliseconds()> drain_timeout;
  // Asked before each watchdog ping: true when every worker loop turned
  // after `since` (daemon/workers.hpp); the ping is skipped otherwise, so a
  // stalled worker gets the daemon restarted. Empty: one loop, always true.
  std::function<bool(std::chrono::steady_clock::time_point since)> workers_alive;
  // Debug hook (SIGUSR1 in a -Ddebug_hooks build): blocks a worker loop
  // other than the main one. Empty: one loop.
  std::function<void()> stall_worker;
};

// The daemon's signals from its first moments on. Made right after the loop,
// before any slow start-up step (binding, resolving names, fetching the start
// page): until then SIGHUP's default action would kill the daemon. During
// start-up a SIGHUP is remembered and applied once ready (once, however many
// came); SIGINT/SIGTERM set stop_requested(), which slow steps that run the
// loop check so they can give up, and the daemon then exits 0.
//
// Owns its signal watchers and timers (closed by run() or end()).
class Lifecycle {
 public:
  explicit Lifecycle(uv_loop_t* loop);
  ~Lifecycle();
  Lifecycle(const Lifecycle&) = delete;
  Lifecycle& operator=(const Lifecycle&) = delete;

  bool stop_requested() const;

  // Announce READY=1 (unless a stop came during start-up), apply a reload
  // that came during start-up, then run the loop until the daemon has
  // stopped; closes every handle and the loop. Returns the exit code.
  int run(Hooks hooks);

  // Start-up ends without running: close every handle and the loop
  // (the owner has closed its own), return `code`.
  int end(int code);

 private:
  struct Runner;
  std::unique_ptr<Runner> r_;
};

// Block SIGHUP, SIGINT and SIGTERM in this thread (first thing in main) so
// that one sent before the Lifecycle exists waits for it instead of killing
// the process; the Lifecycle unblocks them once its watchers are in place.
void hold_signals();

}  // namespace cdn::daemon

#include "common/config/settings.hpp"
#include "common/net/server.hpp"
#include "daemons/tls.hpp"

namespace cdn::daemon {

// The server's limits and timeouts from a [server] section.
net::ServerOptions server_options(const config::ServerSettings& s, std::string server_header);

// Where worker 0 listens, for the other workers to listen there too.
struct Listening {
  std::string where;         // "127.0.0.1:33000" or "2 socket(s) from systemd, port 80"
  std::vector<int> sockets;  // systemd's sockets (worker 0 adopted them), none when bound
  uint16_t port = 0;         // the port bound (port 0 resolved)
  bool reuse_port = false;   // bound with SO_REUSEPORT (several workers)
  // The [tls] port, the same way (systemd's sockets named "https").
  std::vector<int> tls_sockets;
  uint16_t tls_port = 0;
};

// Serve on the sockets systemd passed (socket activation) or bind
// address:port, with SO_REUSEPORT when `workers` > 1; and the same for the
// [tls] port when it is on (a socket named "https" from systemd, or
// [tls] address:port). Throws std::runtime_error with a clear message on
// failure.
// `certificates`: the [tls] port's (null when it is off).
Listening start_listening(net::Server& server, const config::ServerSettings& s,
                          uint32_t workers = 1, const config::TlsSettings& tls = {},
                          std::shared_ptr<TlsCertificates> certificates = nullptr);
// Another worker's server listens where worker 0 does: its own socket on
// the same port (SO_REUSEPORT: the kernel spreads connections), or a dup
// of each socket systemd passed (shared: whichever loop accepts first).
void join_listening(net::Server& server, const config::ServerSettings& s, const Listening& l,
                    const config::TlsSettings& tls = {},
                    std::shared_ptr<TlsCertificates> certificates = nullptr);

}  // namespace cdn::daemon

namespace cdn::daemon {

// The configuration file to read: `explicit_path` when given (it must
// exist), else `default_path` when it exists, else none (built-in defaults).
struct ConfigSource {
  std::string path;  // empty: no file
  bool required = false;
};
ConfigSource config_source(const std::string& explicit_path, const std::string& default_path);

}  // namespace cdn::daemon

#include <optional>

namespace cdn::daemon {

// What every request to either daemon goes through first: only GET and HEAD
// unless `any_method` (a gateway, which forwards the others; 405 with Allow),
// and a path that normalises (400). Returns the normalised path, or nullopt
// when the request has been answered already.
std::optional<std::string> accept_request(net::Exchange& ex, bool any_method = false);

// A 200 with a generated document (status JSON, metrics), never cached.
// `owner`, when given, keeps `body` alive until it is written, so a large
// document (the metrics of 10,000 replicas) is sent without a copy.
void send_document(net::Exchange& ex, std::string_view content_type, std::string_view body,
                   std::shared_ptr<const void> owner = nullptr);

}  // namespace cdn::daemon
