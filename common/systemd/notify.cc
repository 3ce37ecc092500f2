// SPDX-License-Identifier: MIT
#include "common/systemd/notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

#include <string>

#include "cdn_config.h"
#if CDN_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace cdn::systemd {

namespace {
// The notify protocol is one datagram to $NOTIFY_SOCKET (documented in
// sd_notify(3) as stable for independent senders). We send it ourselves,
// non-blocking: sd_notify() blocks when the receiver's queue is full, and a
// supervisor that stops reading must never stall the event loop. A message
// that cannot be queued is dropped (the next STATUS=/WATCHDOG= follows soon).
void notify(const std::string& msg) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || path[0] == '\0') return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const size_t len = std::strlen(path);
  if (len >= sizeof addr.sun_path) return;
  std::memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return;
  const auto addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
  (void)sendto(fd, msg.data(), msg.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr),
               addr_len);
  close(fd);
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

std::vector<ListenFd> listen_fds() {
  std::vector<ListenFd> fds;
#if CDN_HAVE_SYSTEMD
  // unset_environment=1: children (none today) must not inherit them.
  char** names = nullptr;
  const int n = sd_listen_fds_with_names(1, &names);
  for (int i = 0; i < n; ++i) {
    const int fd = SD_LISTEN_FDS_START + i;
    std::string name = names != nullptr && names[i] != nullptr ? names[i] : "";
    if (sd_is_socket_inet(fd, 0, SOCK_STREAM, 1, 0) > 0) fds.push_back({fd, std::move(name)});
  }
  if (names != nullptr) {
    for (int i = 0; i < n; ++i) free(names[i]);
    free(names);
  }
#endif
  return fds;
}

}  // namespace cdn::systemd
