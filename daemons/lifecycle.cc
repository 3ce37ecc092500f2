#include "daemons/lifecycle.hpp"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <csignal>

#include "cdn_config.h"
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
