// SPDX-License-Identifier: MIT
// The balancer daemon's request handling: 302 to the chosen replica,
// locate/status/metrics JSON, 503 when no replica is up. Owns the table,
// the prober and the server; lives on the loop thread.
#pragma once

#include <uv.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/config/settings.hpp"
#include "common/net/server.hpp"
#include "daemons/balancerd/prober.hpp"
#include "daemons/balancerd/table.hpp"
#include "daemons/observe.hpp"

namespace cdn::balancer {

class Balancer {
 public:
  Balancer(uv_loop_t* loop, config::BalancerSettings settings);

  // Throws std::runtime_error when it cannot listen.
  void start();
  // `observers` from daemon::prepare_observers() (may throw, before this).
  void reconfigure(config::BalancerSettings settings, daemon::ObserverReload observers);
  const daemon::RequestLog& requests() const { return requests_; }
  const config::BalancerSettings& settings() const { return settings_; }
  void drain(std::function<void()> done);
  void stop();
  std::string status_line() const;

 private:
  // The server's options from settings_ (on_complete feeds requests_).
  net::ServerOptions options();
  void handle(net::Exchange& ex);
  void redirect(net::Exchange& ex, const std::string& path);
  void serve_locate(net::Exchange& ex);
  void serve_status(net::Exchange& ex);
  void serve_metrics(net::Exchange& ex);
  std::string url_for(size_t index, std::string_view encoded_path_and_query) const;
  // "http://host:port" of replica `index`, formatted once per address.
  const std::string& url_prefix(size_t index);

  uv_loop_t* loop_;
  config::BalancerSettings settings_;
  Table table_;
  Prober prober_;
  // Before server_: its on_complete feeds requests_.
  daemon::RequestLog requests_{"cdn-balancerd"};
  daemon::AdminGate admin_;
  net::Server server_;
  bool draining_ = false;
  uint64_t redirects_total_ = 0;
  uint64_t unavailable_total_ = 0;
  uint64_t locates_total_ = 0;
  // Per replica index: the address a prefix was built for, and the prefix.
  // Checked against the table on use, so a reload that moves replicas
  // cannot pair an index with another replica's URL.
  std::vector<std::pair<config::HostPort, std::string>> url_prefixes_;
  // Buffers of the 302 answer, reused so that a redirect allocates nothing.
  std::string tail_, location_, fallbacks_, body_;
  std::vector<Choice> picks_;
};

}  // namespace cdn::balancer
