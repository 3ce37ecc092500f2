#include "daemons/lifecycle.hpp"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <csignal>

#include <stdexcept>
#include "cdn_config.h"

#include "common/http/path.hpp"
#include "common/systemd/notify.hpp"
#include "common/uv/handle.hpp"

namespace cdn::daemon {

namespace {

struct Runner {
  uv_loop_t* loop = nullptr;
  Hooks hooks;
  uv::Ptr<uv_signal_t> sigint, sigterm, sighup;
#if CDN_DEBUG_HOOKS
  uv::Ptr<uv_signal_t> sigusr2;
#endif
  uv::Ptr<uv_timer_t> status_timer, watchdog_timer, drain_timer;
  bool stopping = false;
  bool stopped = false;
  std::string last_status;

  void publish_status() {
    std::string line = hooks.status_line ? hooks.status_line() : std::string();
    if (line != last_status) {
      systemd::notify_status(line);
      last_status = std::move(line);
    }
  }

  void finish() {
    if (stopped) return;
    stopped = true;
    sigint.reset();
    sigterm.reset();
    sighup.reset();
#if CDN_DEBUG_HOOKS
    sigusr2.reset();
#endif
    status_timer.reset();
    watchdog_timer.reset();
    drain_timer.reset();
    if (hooks.stop_now) hooks.stop_now();
  }

  void on_stop_signal(const char* name) {
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
    if (stopping) return;
    systemd::notify_reloading();
    spdlog::info("SIGHUP: reloading configuration");
    if (hooks.reload && hooks.reload()) spdlog::info("configuration reloaded");
    systemd::notify_ready();
    publish_status();
  }
};

}  // namespace

int run(uv_loop_t* loop, Hooks hooks) {
  // A client that vanishes mid-write must give EPIPE, not kill the daemon.
  std::signal(SIGPIPE, SIG_IGN);
  Runner r;
  r.loop = loop;
  r.hooks = std::move(hooks);
  r.sigint = uv::make_signal(loop, SIGINT, [&r] { r.on_stop_signal("SIGINT"); });
  r.sigterm = uv::make_signal(loop, SIGTERM, [&r] { r.on_stop_signal("SIGTERM"); });
  r.sighup = uv::make_signal(loop, SIGHUP, [&r] { r.on_reload(); });
#if CDN_DEBUG_HOOKS
  // Test-only: SIGUSR2 stalls the loop so the watchdog test can see systemd act.
  r.sigusr2 = uv::make_signal(loop, SIGUSR2, [] {
    spdlog::warn("SIGUSR2: stalling the event loop for 3600 s (debug hook)");
    for (int i = 0; i < 3600; ++i) sleep(1);
  });
#endif
  r.status_timer = uv::make_timer(loop, [&r] { r.publish_status(); });
  uv::timer_start(r.status_timer.get(), 1000, 1000);
  uv_unref(r.status_timer->base());
  if (auto every = systemd::watchdog_ping_interval()) {
    const uint64_t ms = std::max<uint64_t>(1, static_cast<uint64_t>(every->count() / 1000));
    r.watchdog_timer = uv::make_timer(loop, [] { systemd::notify_watchdog(); });
    uv::timer_start(r.watchdog_timer.get(), ms, ms);
    uv_unref(r.watchdog_timer->base());
    spdlog::info("watchdog: pinging every {} ms", ms);
  }
  r.publish_status();
  systemd::notify_ready();
  uv_run(loop, UV_RUN_DEFAULT);
  r.finish();
  uv::close_loop(loop);
  return 0;
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
  // Bodies are read and discarded (only GET/HEAD are served); a small one still
  // gets its proper 405, a large one 413.
  o.limits.max_body = 64 * 1024;
  o.server_header = std::move(server_header);
  return o;
}

std::string start_listening(net::Server& server, const config::ServerSettings& s) {
  const auto fds = systemd::listen_fds();
  if (!fds.empty()) {
    for (int fd : fds) {
      const int rc = server.adopt(fd);
      if (rc != 0) {
        throw std::runtime_error("socket from systemd (fd " + std::to_string(fd) +
                                 "): " + uv_strerror(rc));
      }
    }
    return std::to_string(fds.size()) + " socket(s) from systemd, port " +
           std::to_string(server.port());
  }
  const int rc = server.listen(s.address, s.port);
  if (rc != 0) {
    throw std::runtime_error("cannot listen on " + s.address + ":" + std::to_string(s.port) + ": " +
                             uv_strerror(rc));
  }
  return s.address + ":" + std::to_string(server.port());
}

}  // namespace cdn::daemon

namespace cdn::daemon {

ConfigSource config_source(const std::string& explicit_path, const std::string& default_path) {
  if (!explicit_path.empty()) return {explicit_path, true};
  if (::access(default_path.c_str(), F_OK) == 0) return {default_path, true};
  return {};
}

}  // namespace cdn::daemon

namespace cdn::daemon {

std::optional<std::string> accept_request(net::Exchange& ex) {
  const auto& req = ex.request();
  if (req.method != "GET" && req.method != "HEAD") {
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
