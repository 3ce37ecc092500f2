#include "common/systemd/notify.hpp"

#include <time.h>

#include <string>

#include "cdn_config.h"
#if CDN_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace cdn::systemd {

namespace {
void notify(const std::string& msg) {
#if CDN_HAVE_SYSTEMD
  sd_notify(0, msg.c_str());
#else
  (void)msg;
#endif
}
}  // namespace

void notify_ready() { notify("READY=1"); }

void notify_status(std::string_view status) { notify("STATUS=" + std::string(status)); }

void notify_stopping() { notify("STOPPING=1"); }

void notify_reloading() {
  struct timespec ts {};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const long long usec = static_cast<long long>(ts.tv_sec) * 1000000LL + ts.tv_nsec / 1000;
  notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
}

void notify_watchdog() { notify("WATCHDOG=1"); }

std::optional<std::chrono::microseconds> watchdog_ping_interval() {
#if CDN_HAVE_SYSTEMD
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    return std::chrono::microseconds(usec / 2);
  }
#endif
  return std::nullopt;
}

std::vector<int> listen_fds() {
  std::vector<int> fds;
#if CDN_HAVE_SYSTEMD
  // unset_environment=1: children (none today) must not inherit them.
  const int n = sd_listen_fds(1);
  for (int i = 0; i < n; ++i) {
    const int fd = SD_LISTEN_FDS_START + i;
    if (sd_is_socket_inet(fd, 0, SOCK_STREAM, 1, 0) > 0) fds.push_back(fd);
  }
#endif
  return fds;
}

}  // namespace cdn::systemd
