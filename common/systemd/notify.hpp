// SPDX-License-Identifier: MIT
// The daemon's side of the systemd service protocol: sd_notify messages
// and socket activation. Every call is a harmless no-op when the daemon is
// not run by systemd (no NOTIFY_SOCKET / LISTEN_FDS) or built without libsystemd.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cdn::systemd {

void notify_ready();
void notify_status(std::string_view status);
void notify_stopping();
// RELOADING=1 with MONOTONIC_USEC= (systemd >= 253 reads it; harmless before).
void notify_reloading();
void notify_watchdog();
// Half of WatchdogSec when the watchdog is on for this process, else nullopt.
std::optional<std::chrono::microseconds> watchdog_ping_interval();
// Listening TCP sockets passed by socket activation (LISTEN_FDS), checked
// with sd_is_socket_inet; empty when none were passed. `name` is the
// socket unit's FileDescriptorName= (LISTEN_FDNAMES): "https" sockets are
// the [tls] port's.
struct ListenFd {
  int fd;
  std::string name;
};
std::vector<ListenFd> listen_fds();
inline constexpr std::string_view kHttpsSocketName = "https";

}  // namespace cdn::systemd
