// SPDX-License-Identifier: MIT
#include "daemons/lifecycle.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "cdn_config.h"

#include "common/http/path.hpp"
#include "common/systemd/notify.hpp"
#include "common/uv/handle.hpp"
#include "daemons/heap.hpp"

namespace cdn::daemon {

namespace {
// Free heap memory that piles up past this is given back (daemons/heap.hpp):
// about what 64 TLS handshakes in flight leave behind.
constexpr size_t kHeapTrimSlack = size_t{1} << 20;

// What hold_signals() blocks until the Lifecycle's watchers are in place.
sigset_t held_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGHUP, SIGINT, SIGTERM}) sigaddset(&set, sig);
  return set;
}
}  // namespace

struct Lifecycle::Runner {
  uv_loop_t* loop = nullptr;
  Hooks hooks;
  uv::Ptr<uv_signal_t> sigint, sigterm, sighup;
#if CDN_DEBUG_HOOKS
  uv::Ptr<uv_signal_t> sigusr2, sigusr1;
#endif
  uv::Ptr<uv_timer_t> status_timer, watchdog_timer, drain_timer;
  bool ready = false;           // run() has announced READY=1
  bool reload_pending = false;  // a SIGHUP came during start-up
  bool stop_requested = false;  // a SIGINT/SIGTERM came during start-up
  bool stopping = false;
  bool stopped = false;
  bool worker_stalled = false;  // logged once per stall
  std::string last_status;
  HeapTrim heap_trim{kHeapTrimSlack};

  // On the status timer, once a second (daemons/heap.hpp).
  void settle_heap() {
    if (!heap_trim.due(heap_free_bytes())) return;
    trim_heap();
    heap_trim.trimmed(heap_free_bytes());
  }

  void publish_status() {
    std::string line = hooks.status_line ? hooks.status_line() : std::string();
    if (line != last_status) {
      systemd::notify_status(line);
      last_status = std::move(line);
    }
  }

  void close_handles() {
    sigint.reset();
    sigterm.reset();
    sighup.reset();
#if CDN_DEBUG_HOOKS
    sigusr2.reset();
    sigusr1.reset();
#endif
    status_timer.reset();
    watchdog_timer.reset();
    drain_timer.reset();
  }

  void finish() {
    if (stopped) return;
    stopped = true;
    close_handles();
    if (hooks.stop_now) hooks.stop_now();
  }

  void on_stop_signal(const char* name) {
    if (!ready) {
      // Nothing is served yet: no drain. A slow step that runs the loop
      // sees stop_requested and gives up; run() then exits at once.
      if (!stop_requested) spdlog::info("{} during start-up: stopping", name);
      stop_requested = true;
      return;
    }
    if (stopping) {
      spdlog::warn("{} again: stopping now", name);
      finish();
      return;
    }
    stopping = true;
    const auto timeout = hooks.drain_timeout ? hooks.drain_timeout() : std::chrono::seconds(30);
    spdlog::info("{}: draining (at most {} ms), a second signal stops at once", name,
                 timeout.count());
    systemd::notify_stopping();
    systemd::notify_status("draining");
    drain_timer = uv::make_timer(loop, [this] {
      spdlog::warn("drain timeout: closing the connections still open");
      finish();
    });
    uv::timer_start(drain_timer.get(), static_cast<uint64_t>(timeout.count()), 0);
    hooks.drain([this] {
      spdlog::info("drained: every in-flight request finished");
      finish();
    });
  }

  void on_reload() {
    if (!ready) {
      if (!reload_pending) {
        spdlog::info("SIGHUP during start-up: the configuration is reloaded once ready");
      }
      reload_pending = true;
      return;
    }
    if (stopping) return;
    systemd::notify_reloading();
    spdlog::info("SIGHUP: reloading configuration");
    if (hooks.reload && hooks.reload()) spdlog::info("configuration reloaded");
    systemd::notify_ready();
    publish_status();
  }
};

Lifecycle::Lifecycle(uv_loop_t* loop) : r_(std::make_unique<Runner>()) {
  // A client that vanishes mid-write must give EPIPE, not kill the daemon.
  (void)std::signal(SIGPIPE, SIG_IGN);  // cannot fail for SIGPIPE
  Runner& r = *r_;
  r.loop = loop;
  r.sigint = uv::make_signal(loop, SIGINT, [&r] { r.on_stop_signal("SIGINT"); });
  r.sigterm = uv::make_signal(loop, SIGTERM, [&r] { r.on_stop_signal("SIGTERM"); });
  r.sighup = uv::make_signal(loop, SIGHUP, [&r] { r.on_reload(); });
#if CDN_DEBUG_HOOKS
  // Test-only: SIGUSR2 stalls the loop so the watchdog test can see systemd act.
  r.sigusr2 = uv::make_signal(loop, SIGUSR2, [] {
    spdlog::warn("SIGUSR2: stalling the event loop for 3600 s (debug hook)");
    for (int i = 0; i < 3600; ++i) sleep(1);
  });
  // Test-only: SIGUSR1 stalls a worker loop (not the main one), for the
  // watchdog test of the workers' heartbeats.
  r.sigusr1 = uv::make_signal(loop, SIGUSR1, [&r] {
    if (!r.hooks.stall_worker) {
      spdlog::warn("SIGUSR1: no worker loop to stall (one worker)");
      return;
    }
    spdlog::warn("SIGUSR1: stalling a worker loop for 3600 s (debug hook)");
    r.hooks.stall_worker();
  });
#endif
  // Held since main began (hold_signals): one that came meanwhile is
  // delivered now, to the watchers.
  const sigset_t set = held_signals();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

Lifecycle::~Lifecycle() { r_->close_handles(); }

bool Lifecycle::stop_requested() const { return r_->stop_requested; }

int Lifecycle::end(int code) {
  r_->close_handles();
  uv::close_loop(r_->loop);
  return code;
}

int Lifecycle::run(Hooks hooks) {
  Runner& r = *r_;
  r.hooks = std::move(hooks);
  // Signals that came while start-up held the loop (a step that did not run
  // it) are read now, before READY=1.
  uv_run(r.loop, UV_RUN_NOWAIT);
  if (r.stop_requested) {
    spdlog::info("stopped during start-up");
    r.finish();
    return end(0);
  }
  r.status_timer = uv::make_timer(r.loop, [&r] {
    r.publish_status();
    r.settle_heap();
  });
  uv::timer_start(r.status_timer.get(), 1000, 1000);
  uv_unref(r.status_timer->base());
  if (auto every = systemd::watchdog_ping_interval()) {
    const uint64_t ms = std::max<uint64_t>(1, static_cast<uint64_t>(every->count() / 1000));
    r.watchdog_timer = uv::make_timer(r.loop, [&r, every = *every] {
      // Each worker loop must have turned within the last interval too.
      const auto since = std::chrono::steady_clock::now() - every;
      if (r.hooks.workers_alive && !r.hooks.workers_alive(since)) {
        if (!r.worker_stalled) spdlog::error("a worker loop is stalled: watchdog pings stop");
        r.worker_stalled = true;
        return;
      }
      r.worker_stalled = false;
      systemd::notify_watchdog();
    });
    uv::timer_start(r.watchdog_timer.get(), ms, ms);
    uv_unref(r.watchdog_timer->base());
    spdlog::info("watchdog: pinging every {} ms", ms);
  }
  r.ready = true;
  r.publish_status();
  systemd::notify_ready();
  if (r.reload_pending) {
    r.reload_pending = false;
    r.on_reload();
  }
  uv_run(r.loop, UV_RUN_DEFAULT);
  r.finish();
  return end(0);
}

void hold_signals() {
  const sigset_t set = held_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

}  // namespace cdn::daemon

namespace cdn::daemon {

net::ServerOptions server_options(const config::ServerSettings& s, std::string server_header) {
  net::ServerOptions o;
  o.max_connections = s.max_connections;
  o.idle_timeout = s.idle_timeout;
  o.header_timeout = s.header_timeout;
  o.send_timeout = s.send_timeout;
  o.limits.max_request_line = s.max_request_line;
  o.limits.max_header_bytes = s.max_header_bytes;
  o.limits.max_headers = s.max_headers;
  // Bodies are read whole before the request is handled: forwarded to an
  // origin, else dropped (a small one still gets its proper 405).
  o.limits.max_body = s.max_body;
  o.server_header = std::move(server_header);
  o.accepting_servers = config::resolve_workers(s.workers);
  return o;
}

namespace {

uint16_t local_port_of(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return 0;
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&a)->sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port);
  return 0;
}

std::string tls_address(const config::ServerSettings& s, const config::TlsSettings& tls) {
  return tls.address.empty() ? s.address : tls.address;
}

void adopt_all(net::Server& server, const std::vector<int>& fds, const net::TransportLayer& tls,
               bool dup) {
  for (int fd : fds) {
    const int use = dup ? ::fcntl(fd, F_DUPFD_CLOEXEC, 0) : fd;
    const int rc = use < 0 ? uv_translate_sys_error(errno) : server.adopt(use, tls);
    if (rc != 0) {
      throw std::runtime_error(std::string(tls ? "https " : "") + "socket from systemd (fd " +
                               std::to_string(fd) + ")" + (dup ? " for a worker" : "") + ": " +
                               uv_strerror(rc));
    }
  }
}

}  // namespace

Listening start_listening(net::Server& server, const config::ServerSettings& s, uint32_t workers,
                          const config::TlsSettings& tls,
                          std::shared_ptr<TlsCertificates> certificates) {
  Listening l;
  const net::TransportLayer layer =
      certificates ? tls_layer(server.loop(), std::move(certificates)) : nullptr;
  // A socket of systemd's is the [tls] port's when its unit names it
  // "https" (FileDescriptorName=), or when it is bound to [tls] port (one
  // unit with two ListenStream= lines names both sockets alike).
  for (auto& [fd, name] : systemd::listen_fds()) {
    const bool https =
        name == systemd::kHttpsSocketName || (tls.enabled() && local_port_of(fd) == tls.port);
    (https ? l.tls_sockets : l.sockets).push_back(fd);
  }
  if (!l.tls_sockets.empty() && !layer) {
    throw std::runtime_error(
        "systemd passed a socket named \"https\", but [tls] port is 0 "
        "(set [tls] port, certificate and key)");
  }
  l.reuse_port = workers > 1;
  const auto sharing = l.reuse_port ? net::Server::Sharing::First : net::Server::Sharing::None;
  if (!l.sockets.empty() || !l.tls_sockets.empty()) {
    adopt_all(server, l.sockets, {}, false);
    adopt_all(server, l.tls_sockets, layer, false);
    l.port = l.sockets.empty() ? 0 : local_port_of(l.sockets.front());
    l.where = std::to_string(l.sockets.size() + l.tls_sockets.size()) +
              " socket(s) from systemd, port " + std::to_string(l.port);
  } else {
    const int rc = server.listen(s.address, s.port, sharing);
    if (rc != 0) {
      throw std::runtime_error("cannot listen on " + s.address + ":" + std::to_string(s.port) +
                               ": " + uv_strerror(rc));
    }
    l.port = server.port();
    l.where = s.address + ":" + std::to_string(l.port);
  }
  // The [tls] port from the file, unless systemd passed it.
  if (layer && l.tls_sockets.empty()) {
    const std::string address = tls_address(s, tls);
    const int rc = server.listen(address, tls.port, sharing, layer);
    if (rc != 0) {
      throw std::runtime_error("cannot listen on " + address + ":" + std::to_string(tls.port) +
                               " ([tls] port): " + uv_strerror(rc));
    }
  }
  if (layer) {
    l.tls_port = l.tls_sockets.empty() ? tls.port : local_port_of(l.tls_sockets.front());
    l.where += ", https on " + (l.tls_sockets.empty() ? tls_address(s, tls) + ":" : "port ") +
               std::to_string(l.tls_port);
  }
  return l;
}

void join_listening(net::Server& server, const config::ServerSettings& s, const Listening& l,
                    const config::TlsSettings& tls, std::shared_ptr<TlsCertificates> certificates) {
  const net::TransportLayer layer =
      certificates ? tls_layer(server.loop(), std::move(certificates)) : nullptr;
  adopt_all(server, l.sockets, {}, true);
  adopt_all(server, l.tls_sockets, layer, true);
  if (l.sockets.empty() && l.tls_sockets.empty()) {
    const int rc = server.listen(s.address, l.port, net::Server::Sharing::Join);
    if (rc != 0) {
      throw std::runtime_error("worker cannot listen on " + s.address + ":" +
                               std::to_string(l.port) + ": " + uv_strerror(rc));
    }
  }
  if (layer && l.tls_sockets.empty()) {
    const std::string address = tls_address(s, tls);
    const int rc = server.listen(address, l.tls_port, net::Server::Sharing::Join, layer);
    if (rc != 0) {
      throw std::runtime_error("worker cannot listen on " + address + ":" +
                               std::to_string(l.tls_port) + " ([tls] port): " + uv_strerror(rc));
    }
  }
}

}  // namespace cdn::daemon

namespace cdn::daemon {

ConfigSource config_source(const std::string& explicit_path, const std::string& default_path) {
  // Absolute, so that the paths the file holds (relative to its directory)
  // come out absolute too: --print-config's output then means the same
  // wherever it is read.
  if (!explicit_path.empty()) {
    return {std::filesystem::absolute(explicit_path).lexically_normal().string(), true};
  }
  if (::access(default_path.c_str(), F_OK) == 0) return {default_path, true};
  return {};
}

}  // namespace cdn::daemon

namespace cdn::daemon {

std::optional<std::string> accept_request(net::Exchange& ex, bool any_method) {
  const auto& req = ex.request();
  // CONNECT names an authority, not a resource: never forwarded.
  if ((!any_method || req.method == "CONNECT") && req.method != "GET" && req.method != "HEAD") {
    ex.reply(405, "only GET and HEAD are served", {{"Allow", "GET, HEAD"}});
    return std::nullopt;
  }
  auto path = http::normalize_path(req.target);
  if (!path) ex.reply(400, "bad request path");
  return path;
}

void send_document(net::Exchange& ex, std::string_view content_type, std::string_view body,
                   std::shared_ptr<const void> owner) {
  auto& h = ex.begin(200);
  h.header("Content-Type", content_type);
  h.header("Cache-Control", "no-store");
  h.header("Content-Length", static_cast<uint64_t>(body.size()));
  ex.finish(body, std::move(owner));
}

}  // namespace cdn::daemon

namespace cdn::daemon {

NofilePlan plan_nofile(uint64_t soft, uint64_t hard, uint64_t nr_open, uint64_t need) {
  NofilePlan p;
  const uint64_t ceiling = hard == RLIM_INFINITY ? nr_open : hard;
  p.soft = std::max(soft, ceiling);
  p.fits = need <= p.soft;
  return p;
}

namespace {
uint64_t nr_open() {
  std::ifstream in("/proc/sys/fs/nr_open");
  uint64_t v = 0;
  if (in >> v && v > 0) return v;
  return 1024 * 1024;  // the kernel's default
}

std::string limit_text(rlim_t v) {
  return v == RLIM_INFINITY ? std::string("unlimited") : std::to_string(v);
}

void warn_unless_fits(uint64_t need, uint64_t soft) {
  if (need <= soft) return;
  spdlog::warn(
      "open files limit {} is below the {} descriptors max_connections may take (with a margin "
      "for files, listeners, probes and origin connections): connections past the limit are "
      "refused; raise LimitNOFILE= (or ulimit -Hn) or lower [server] max_connections",
      soft, need);
}
}  // namespace

void raise_nofile_limit(uint64_t need) {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    spdlog::warn("cannot read the open files limit: {}", std::strerror(errno));
    return;
  }
  const auto plan = plan_nofile(lim.rlim_cur, lim.rlim_max, nr_open(), need);
  if (plan.soft != lim.rlim_cur) {
    const uint64_t was = lim.rlim_cur;
    lim.rlim_cur = plan.soft;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
      spdlog::warn("cannot raise the open files limit from {} to {}: {}", was, plan.soft,
                   std::strerror(errno));
      warn_unless_fits(need, was);
      return;
    }
    spdlog::info("open files limit raised from {} to {} (hard limit {}); {} needed at most", was,
                 plan.soft, limit_text(lim.rlim_max), need);
  } else {
    spdlog::info("open files limit {} (hard limit {}); {} needed at most", limit_text(lim.rlim_cur),
                 limit_text(lim.rlim_max), need);
  }
  warn_unless_fits(need, plan.soft);
}

void check_nofile(uint64_t need) {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) warn_unless_fits(need, lim.rlim_cur);
}

}  // namespace cdn::daemon
