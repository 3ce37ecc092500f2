// SPDX-License-Identifier: MIT
// The balancer daemon's request handling: 302 to the chosen replica,
// locate/status/metrics JSON, 503 when no replica is up. The Balancer owns
// the table, the prober and the purger (main loop) and a Front per worker loop, which
// answers from the table snapshot the Balancer publishes (no lock on the
// 302 path). The status and metrics pages add up every front.
#pragma once

#include <uv.h>

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/config/settings.hpp"
#include "common/net/server.hpp"
#include "common/uv/handle.hpp"
#include "daemons/balancerd/prober.hpp"
#include "daemons/balancerd/purger.hpp"
#include "daemons/balancerd/scheme.hpp"
#include "daemons/balancerd/sites.hpp"
#include "daemons/balancerd/table.hpp"
#include "daemons/balancerd/traffic.hpp"
#include "daemons/lifecycle.hpp"
#include "daemons/observe.hpp"
#include "daemons/watch.hpp"
#include "daemons/workers.hpp"

namespace cdn::balancer {

class Balancer;

// What the main loop publishes for the fronts (daemon::Board): a copy of the
// table as the prober left it, and where the fronts count the clients they
// send. Immutable but for `sent`.
struct Snapshot {
  Snapshot(const Table& t, uint64_t layout_, const Prober& p, const Purger& purger);
  Table table;
  // Changes when a reload may have moved replica indices: counts made
  // against another layout are not folded into the table.
  uint64_t layout = 0;
  // Clients the fronts sent to replica i since this snapshot was published;
  // the main loop folds them into its table (load estimate, redirects) and
  // publishes again, at most every kPublishEvery.
  std::unique_ptr<std::atomic<uint64_t>[]> sent;
  // The prober's figures when published (the prober lives on the main loop).
  uint64_t probes_total = 0, streamed_total = 0, probe_failures_total = 0, early_probes_total = 0;
  // The purger's figures (it lives on the main loop too).
  uint64_t purges_total = 0, purges_forwarded_total = 0, purges_forward_failed_total = 0,
           purges_owed = 0;
};

// How often the main loop publishes a new snapshot when something changed:
// a replica that goes down stops taking clients within this, and a burst of
// clients on one worker shows in the others' load estimates within this.
inline constexpr std::chrono::milliseconds kPublishEvery{100};

// One worker's share of the balancer: its server and what answering needs.
// Lives on its worker's loop (created, used and destroyed there); other
// threads read only its OwnCounters, server stats and request log.
class Front {
 public:
  Front(uv_loop_t* loop, Balancer& shared, const config::BalancerSettings& settings,
        const daemon::RequestLog::Prepared& log);
  net::Server& server() { return server_; }
  const net::Server& server() const { return server_; }
  const daemon::RequestLog& requests() const { return requests_; }
  const daemon::AdminGate& admin() const { return admin_; }
  void reconfigure(const config::BalancerSettings& settings,
                   const daemon::ObserverReload& observers);
  void set_name(const std::string& name) { settings_.server.name = name; }
  // The dashboard's traffic samples, every second on the front's loop.
  void start_sampling();
  // Ends the status streams, then drains the server (done: drained).
  void drain(std::function<void()> done);
  void stop();

  metrics::OwnCounter redirects_total = 0;
  metrics::OwnCounter unavailable_total = 0;
  metrics::OwnCounter locates_total = 0;
  metrics::OwnCounter misdirected_total = 0;

 private:
  net::ServerOptions options();
  // The front's own copy of the newest snapshot's table (its choices keep
  // their own random state and round-robin credit across snapshots).
  Table& table();
  // Clients sent to replica i by every front (snapshot_'s indices).
  uint64_t redirects_of(size_t i) const;
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
  // "http://host:port" or "https://name[:port]" of replica `index`
  // (scheme.hpp), formatted once per address.
  const std::string& url_prefix(size_t index, bool https);

  uv_loop_t* loop_;
  Balancer& shared_;
  config::BalancerSettings settings_;
  std::shared_ptr<const Snapshot> snapshot_;
  uint64_t seen_ = 0;  // the board's generation of snapshot_
  std::optional<Table> table_;
  // Which replicas of table_ serve a Host (sites.hpp); rebuilt as the
  // table's sites_generation() moves.
  SiteRouter router_;
  // router_, rebuilt first when the table's sites moved.
  const SiteRouter& router();
  // The replicas of the request's Host, or null for any (a fleet of one
  // site); answers 421 and sets `answered` when no replica serves it.
  const std::vector<char>* replicas_for(net::Exchange& ex, std::string_view host, bool& answered);
  // This loop's inbox: answers made on the main loop (purges) come back here.
  std::shared_ptr<daemon::Inbox> inbox_ = daemon::Inbox::make(loop_);
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
  // Which replicas a TLS client may be sent to (scheme.hpp).
  SchemeRouter schemes_;
  // Per replica index: what its prefixes were built for, and the prefixes.
  // Checked against the table on use, so a reload that moves replicas
  // cannot pair an index with another replica's URL.
  struct Prefixes {
    config::HostPort address;
    std::string public_host;
    uint16_t tls_port = 0;
    std::string http, https;
  };
  std::vector<Prefixes> url_prefixes_;
  // Buffers of the 302 answer, reused so that a redirect allocates nothing.
  std::string tail_, location_, fallbacks_, body_;
  std::vector<Choice> picks_;
};

// The balancer: the table and its prober on the main loop, and one Front
// per worker ([server] workers; front 0 on the main loop).
class Balancer {
 public:
  Balancer(uv_loop_t* loop, config::BalancerSettings settings);
  ~Balancer();  // ends the worker threads (stop() first)

  // Throws std::runtime_error when it cannot listen.
  void start();
  // `observers` from daemon::prepare_observers() (may throw, before this).
  void reconfigure(config::BalancerSettings settings, const daemon::ObserverReload& observers);
  const daemon::RequestLog& requests() const { return fronts_.front()->requests(); }
  const config::BalancerSettings& settings() const { return settings_; }
  void drain(std::function<void()> done);
  void stop();
  std::string status_line() const;
  // Every worker loop turned after `since` (the watchdog asks).
  // Debug hook (Hooks::stall_worker): true when there is a worker thread.
  bool stall_worker_hook() const { return threads_ != nullptr; }
  void stall_worker() { threads_->stall(0); }
  bool workers_alive(std::chrono::steady_clock::time_point since) const;

  // For the fronts, from any thread.
  const daemon::Board<Snapshot>& board() const { return board_; }
  const std::vector<std::unique_ptr<Front>>& fronts() const { return fronts_; }
  bool draining() const { return draining_.load(std::memory_order_relaxed); }
  // What every front's server shares (open connections, descriptors).
  const std::shared_ptr<net::ServerGroup>& server_group() const { return connections_; }
  // Every front's [tls] certificates (null when [tls] port is 0).
  const std::shared_ptr<daemon::TlsCertificates>& tls() const { return tls_; }
  // A front's PURGE (admitted): the purger, on the main loop, answers it.
  // Any thread.
  void purge(purge::Request r, std::string token, daemon::Answer answer);
  // Round-robin's place, shared by the fronts (Table::share_rotation).
  std::atomic<uint64_t>* rotation_ticket() const { return &rotation_ticket_; }

 private:
  // Adds the fronts' counts to table_ and publishes a new snapshot when
  // anything changed (or `force`).
  void publish(bool force = false);

  uv_loop_t* loop_;
  config::BalancerSettings settings_;
  Table table_;
  // table_'s sites, for purges (the purger runs on the main loop).
  SiteRouter router_;
  // router_, rebuilt first when the table's sites moved.
  const SiteRouter& router();
  Prober prober_;
  Purger purger_;
  daemon::Board<Snapshot> board_;
  uint64_t layout_ = 0;
  uint64_t published_probes_ = 0;
  std::array<uint64_t, 3> published_purges_{};
  // Snapshots published whose counts may still grow (a front may hold one
  // until its next request): folded until no front holds them.
  std::vector<std::shared_ptr<const Snapshot>> unfolded_;
  uv::Ptr<uv_timer_t> publish_timer_;
  std::shared_ptr<daemon::Inbox> inbox_;  // the main loop's, for the workers' answers
  std::unique_ptr<daemon::WorkerThreads> threads_;
  std::vector<std::unique_ptr<Front>> fronts_;
  std::atomic<bool> draining_{false};
  mutable std::atomic<uint64_t> rotation_ticket_{0};
  std::shared_ptr<net::ServerGroup> connections_ = std::make_shared<net::ServerGroup>();
  std::shared_ptr<daemon::TlsCertificates> tls_;
};

}  // namespace cdn::balancer
