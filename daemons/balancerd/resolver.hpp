// SPDX-License-Identifier: MIT
// Host names to addresses off the event loop, for the prober.
//
// getaddrinfo blocks: with a resolver that does not answer, for resolv.conf's
// timeout x attempts (10 s by default) per name. It runs here on a few
// threads of the resolver's own, and the answers come back to the loop
// through a uv_async. Why not libuv's threadpool (uv_getaddrinfo): a lookup
// running there cannot be cancelled and the loop cannot close while it runs,
// so a SIGTERM would wait for the resolver's timeout, and four stuck lookups
// would hold the whole pool. Why not c-ares: it reads resolv.conf and
// /etc/hosts only, where getaddrinfo follows nsswitch.conf (systemd-resolved,
// mDNS, LDAP) as every other program on the host does; and it is one more
// dependency for what a thread does.
//
// Ownership: the threads are detached and share the queue with the Resolver
// (a shared_ptr). close() (or the destructor) closes the uv_async and tells
// the threads to stop: one still inside getaddrinfo drops its answer when it
// returns, and the process may exit before that without waiting for it.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/net/address.hpp"
#include "common/uv/handle.hpp"

namespace cdn::balancer {

// The address a host names when it is an IP literal (never sent to a
// resolver): IPv6 with or without brackets, and IPv4 as inet_aton reads it,
// which is how getaddrinfo reads it too ("127.000.000.001", "127.1").
std::optional<net::Address> ip_literal(std::string_view host, uint16_t port);

class Resolver {
 public:
  // `address` has port 0; `error` says why when there is none.
  using Done = std::function<void(const std::string& host, std::optional<net::Address> address,
                                  const std::string& error)>;
  // At most `threads` lookups at a time; `done` is called on the loop.
  Resolver(uv_loop_t* loop, size_t threads, Done done);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Queue a lookup of `host`, unless one is queued or running already.
  void lookup(const std::string& host);
  // Lookups queued or running.
  size_t pending() const;
  void close();

 private:
  struct Shared;
  void deliver();
  std::shared_ptr<Shared> shared_;
  uv::Ptr<uv_async_t> async_;
  Done done_;
};

}  // namespace cdn::balancer
