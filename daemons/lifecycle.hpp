// What both daemons share about their life under systemd (or a shell):
// signals, readiness, status line, watchdog, reload and graceful drain.
//
// SIGINT/SIGTERM once: STOPPING=1, `drain` is asked to finish in-flight work
// and calls back when done; past drain_timeout, `stop_now`. A second signal:
// `stop_now` at once. SIGHUP: RELOADING=1, `reload`, READY=1.
// The watchdog is pinged from a loop timer, so a stuck loop stops the pings.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace cdn::daemon {

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
};

// Announce READY=1, then run the loop until the daemon has stopped; closes
// every handle and the loop. Returns the process exit code.
int run(uv_loop_t* loop, Hooks hooks);

}  // namespace cdn::daemon

#include "common/config/settings.hpp"
#include "common/net/server.hpp"

namespace cdn::daemon {

// The server's limits and timeouts from a [server] section.
net::ServerOptions server_options(const config::ServerSettings& s, std::string server_header);

// Serve on the sockets systemd passed (socket activation) or bind
// address:port. Throws std::runtime_error with a clear message on failure.
// Returns a description such as "127.0.0.1:33000" or "2 sockets from systemd".
std::string start_listening(net::Server& server, const config::ServerSettings& s);

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
// (405 with Allow), and a path that normalises (400). Returns the normalised
// path, or nullopt when the request has been answered already.
std::optional<std::string> accept_request(net::Exchange& ex);

// A 200 with a generated document (status JSON, metrics), never cached.
// `owner`, when given, keeps `body` alive until it is written, so a large
// document (the metrics of 10,000 replicas) is sent without a copy.
void send_document(net::Exchange& ex, std::string_view content_type, std::string_view body,
                   std::shared_ptr<const void> owner = nullptr);

}  // namespace cdn::daemon
