// SPDX-License-Identifier: MIT
// Socket addresses for listening and connecting. Numeric addresses parse
// directly; host names resolve with getaddrinfo (a blocking call, used at
// start-up, on reload and by the one-shot client, never on a serving path).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>

namespace cdn::net {

struct Address {
  sockaddr_storage storage{};
  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&storage); }
  std::string str() const;  // "127.0.0.1:33000", "[::1]:33000"
  std::string ip() const;   // "127.0.0.1", "::1"
  uint16_t port() const;
};

// nullopt with `error` set when the host does not resolve.
std::optional<Address> resolve(const std::string& host, uint16_t port,
                               std::string* error = nullptr);

// The address alone, without port or brackets ("::1"); "?" when not IP.
std::string ip_of(const sockaddr_storage& ss);

// The peer or local address of a connected/bound socket as "ip:port".
std::string peer_name(int fd);
std::string local_name(int fd);
uint16_t local_port(int fd);

}  // namespace cdn::net
