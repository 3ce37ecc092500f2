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
#include "common/uv/handle.hpp"
#include "daemons/balancerd/prober.hpp"
#include "daemons/balancerd/purger.hpp"
#include "daemons/balancerd/sites.hpp"
#include "daemons/balancerd/table.hpp"
#include "daemons/balancerd/traffic.hpp"
#include "daemons/observe.hpp"
#include "daemons/watch.hpp"

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
  // The operators' status document (one line of JSON): the served one and
  // each line of a status stream.
  std::string status_document();
  // Feeds traffic_ the table's redirect counts.
  void sample_traffic(Clock::time_point now);
  void serve_metrics(net::Exchange& ex);
  std::string url_for(size_t index, std::string_view encoded_path_and_query) const;
  // "http://host:port" of replica `index`, formatted once per address.
  const std::string& url_prefix(size_t index);

  uv_loop_t* loop_;
  config::BalancerSettings settings_;
  Table table_;
  // Which replicas serve a Host (sites.hpp); rebuilt as the table's
  // sites_generation() moves.
  SiteRouter router_;
  // The replicas of the request's Host, or null for any (a fleet of one
  // site); answers 421 and sets `answered` when no replica serves it.
  const std::vector<char>* replicas_for(net::Exchange& ex, std::string_view host, bool& answered);
  uint64_t misdirected_total_ = 0;
  Prober prober_;
  Purger purger_;
  // Before server_: its on_complete feeds requests_.
  daemon::RequestLog requests_{"cdn-balancerd"};
  daemon::AdminGate admin_;
  net::Server server_;
  // After server_, whose exchanges they hold: destroyed first.
  daemon::StatusWatches watches_;
  // Clients sent per replica over the last minutes (the dashboard's chart),
  // sampled every second by traffic_timer_ and at each status document.
  TrafficHistory traffic_;
  uv::Ptr<uv_timer_t> traffic_timer_;
  std::vector<std::pair<std::string, uint64_t>> traffic_totals_;  // scratch
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
