// SPDX-License-Identifier: MIT
// The replica daemon's request handling: content, status and metrics over
// the shared HTTP server. A Replica serves one worker loop ([server]
// workers): its server, request log and status watches are its own; the
// content store (thread-safe) is shared by every worker's Replica. The
// Replicas own them all and the worker threads; worker 0 is the main loop.
// The status and metrics pages add up every worker. An origin site's Pull
// (cache index, memory tier, disk cache, request collapsing) lives on the
// main loop; other workers hand it their requests (see docs/architecture.md).
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/settings.hpp"
#include "common/config/site_map.hpp"
#include "common/log/burst.hpp"
#include "common/net/server.hpp"
#include "common/status/status.hpp"
#include "common/uv/handle.hpp"
#include "daemons/lifecycle.hpp"
#include "daemons/observe.hpp"
#include "daemons/replicad/pull.hpp"
#include "daemons/replicad/site.hpp"
#include "daemons/replicad/store.hpp"
#include "daemons/watch.hpp"
#include "daemons/workers.hpp"

namespace cdn::replica {

// Opens the content named by the settings (a directory or a page); nullptr
// for an origin, which the Replica pulls from itself. Throws std::runtime_error.
std::unique_ptr<Store> open_store(const config::ContentSettings& c);

class Replica {
 public:
  // `store`: [content]'s, opened by main (null with an origin, or without
  // a default site); the Replica opens every other site itself (site.hpp).
  // Throws std::runtime_error when a site's content or cache cannot be used.
  // `log`: another worker's writer to share (RequestLog::shared); null: open one.
  // `connections`: what every worker's server shares (net::ServerGroup:
  // open connections, descriptors); null: a group of its own.
  // `sites_of`: another worker's Replica whose sites this one serves too
  // (then `store` is null).
  Replica(uv_loop_t* loop, config::ReplicaSettings settings, std::unique_ptr<Store> store,
          const daemon::RequestLog::Prepared* log = nullptr,
          std::shared_ptr<net::ServerGroup> connections = nullptr,
          const Replica* sites_of = nullptr,
          std::shared_ptr<daemon::TlsCertificates> tls = nullptr);
  // Every worker's Replica (for the pages that add them up); set before any
  // listens, fixed after.
  void set_group(const std::vector<std::unique_ptr<Replica>>* group) { group_ = group; }
  net::Server& server() { return server_; }

  // Origin mode, at start-up: have every origin site's start page ("/") in
  // its cache. Runs the loop until they are (true), or an origin failed and
  // no copy exists (false, with `why`), or `give_up` says so (false: a stop
  // signal came during start-up). Always true for directories and pages.
  bool prefetch_start_page(std::string& why, const std::function<bool()>& give_up = {});
  // The content of every site, for logs and status ("a=root:/srv/a, b=...").
  std::string sources() const;

  // Throws std::runtime_error when it cannot listen. `workers`: how many
  // will listen with it (SO_REUSEPORT when more than one).
  daemon::Listening start(uint32_t workers = 1);
  // Another worker's: listen where worker 0 does (it named the replica).
  void start_worker(const daemon::Listening& where);
  // A reload's sites in two steps, so that one bad site refuses the whole
  // reload before anything is applied. open_sites() opens every site whose
  // name or source changed and touches no running one; it throws
  // std::runtime_error naming the site (and closes what it opened).
  // `store`: [content]'s when main opened it anew.
  struct OpenedSites {
    std::vector<SiteSpec> specs;
    std::vector<std::shared_ptr<Site>> fresh;  // per spec; null: the running site is kept
  };
  OpenedSites open_sites(const config::ReplicaSettings& s, std::unique_ptr<Store> store);
  // A reload refused after open_sites(): what it opened is closed.
  void discard(OpenedSites opened);
  // New settings (SIGHUP), already validated; `sites` from open_sites();
  // `observers` from prepare_observers() (the access log opened, the token
  // read). `sites_of`: take that worker's sites (reconfigured first) as they
  // are (then `sites` is empty).
  void reconfigure(config::ReplicaSettings settings, OpenedSites sites,
                   const daemon::ObserverReload& observers, const Replica* sites_of = nullptr);
  const daemon::RequestLog& requests() const { return requests_; }
  const config::ReplicaSettings& settings() const { return settings_; }
  const net::Server& server() const { return server_; }

  void drain(std::function<void()> done);
  void stop();
  std::string status_line();
  // `in_request`: asked by a request, which holds a connection of its own
  // that is not load (nor are the connections of status watches).
  status::ReplicaStatus status(bool in_request = false) const;

 private:
  // The server's options from settings_ (on_complete feeds requests_).
  net::ServerOptions options();
  void handle(net::Exchange& ex);
  // The site of the request's Host (the default site for others); null
  // when there is none, and the request is answered 421.
  Site* site_for(const http::Request& req) const;
  // Sites from open_sites(), keeping the running ones it did not reopen.
  void build_sites(OpenedSites opened);
  // The running site a reload keeps for `spec` (same name and source), or null.
  std::shared_ptr<Site> kept_site(const SiteSpec& spec, bool new_default_store) const;
  // Another worker's sites, shared (see build_sites).
  void adopt_sites(const Replica& first);
  bool prefetch_start_page(Site& site, std::string& why, const std::function<bool()>& give_up);
  // 421: no site of this replica has the request's host.
  void misdirected(net::Exchange& ex);
  void serve_content(net::Exchange& ex, Site& site, const std::string& path);
  // PURGE (observe.hpp's admit_purge, then the site's cache's purge).
  void serve_purge(net::Exchange& ex, Site* site);
  // A purge applied: counted, logged and answered (`cached`: an origin site).
  void purged(net::Exchange& ex, const purge::Request& r, const std::string& site, size_t n,
              bool cached);
  // Reads and digests a file not yet known on the thread pool, then answers.
  void load_then_serve(net::Exchange& ex, Site& site, const std::string& path);
  void serve_lookup(net::Exchange& ex, Site& site, const std::string& path, Lookup found);
  // Answers with an object: conditionals, Range, headers, body. `open_fd()`
  // gives the body's descriptor when one is needed (-1: changed, 503). A
  // template, not a std::function, whose captures would be allocated per
  // request.
  // `relay`: an origin's answer (origin mode), whose status and fields are
  // relayed (cc unused) instead of made from the Object.
  template <typename OpenFd>
  void answer(net::Exchange& ex, const std::shared_ptr<const Object>& obj, const std::string& cc,
              OpenFd&& open_fd, int64_t age, const std::string& cache_status,
              const Answer* relay = nullptr);
  // The relayed fields of an origin's answer, with our Date (when it had
  // none), Age and Via; `skip` names fields this answer sets itself.
  void relay_fields(http::HeadWriter& h, const Answer& a, int64_t age,
                    std::initializer_list<std::string_view> skip);
  void answer_pulled(net::Exchange& ex, const Answer& a);
  // A file could not be opened for want of descriptors or memory (not
  // because it is missing): counted, and logged once per burst; the caller
  // answers 503 with Retry-After.
  void unavailable(const std::string& path, int err);
  // A file was opened for streaming again: ends the burst above (one line).
  void available() {
    if (open_failures_.active()) end_unavailable();
  }
  void end_unavailable();
  void serve_status(net::Exchange& ex);
  void serve_metrics(net::Exchange& ex);
  void sample_rate();

  uv_loop_t* loop_;
  config::ReplicaSettings settings_;
  // [content] (when it has a source) first, then each [site]; SiteMap's
  // indexes are into it. Shared with digest work running on libuv's thread
  // pool, which may outlive a reload that replaces a site, and with the
  // other workers (adopt_sites).
  std::vector<std::shared_ptr<Site>> sites_;
  config::SiteMap site_map_;
  // Origin sites a reload replaced or removed: kept until exit, for the
  // exchanges and fetch callbacks that may still refer to them.
  std::vector<std::shared_ptr<Site>> retired_;
  std::shared_ptr<net::ServerGroup> connections_;  // see the constructor
  std::shared_ptr<daemon::TlsCertificates> tls_;   // the [tls] port's, shared; null when off
  // Read by every worker's metrics page (they add up the group's).
  metrics::OwnCounter purges_total_ = 0;
  metrics::OwnCounter purged_objects_total_ = 0;
  // Before server_: its on_complete feeds requests_.
  daemon::RequestLog requests_{"cdn-replicad"};
  daemon::AdminGate admin_;
  net::Server server_;
  status::State state_ = status::State::Starting;
  std::chrono::steady_clock::time_point started_;
  // Send rate over the last sampling period (for status and the balancer).
  uint64_t rate_last_bytes_ = 0;
  uint64_t rate_last_requests_ = 0;
  double bytes_per_second_ = 0;
  double requests_per_second_ = 0;
  std::chrono::steady_clock::time_point rate_last_time_;
  metrics::OwnCounter unavailable_total_ = 0;
  const std::vector<std::unique_ptr<Replica>>* group_ = nullptr;
  // The group's Replicas, or this one alone.
  std::vector<const Replica*> members() const;
  log::Burst open_failures_{std::chrono::seconds(10), std::chrono::seconds(1)};
  daemon::StatusWatches watches_;  // /.cdn/status?watch=MS (watch.hpp)
  // Work for this loop from others: wakes of the fills its clients stream,
  // answers of the Pull (on the main loop) to its clients.
  std::shared_ptr<daemon::Inbox> inbox_;
  // Another worker's: the main loop's inbox, where the origin sites' Pulls
  // are called (serve_content, serve_purge). Null for worker 0.
  std::shared_ptr<daemon::Inbox> pull_home_;
};

// Every worker's Replica, the worker threads, and what main.cc asks of the
// replica daemon (the same calls as a Replica's, for all of them).
class Replicas {
 public:
  Replicas(uv_loop_t* loop, config::ReplicaSettings settings, std::unique_ptr<Store> store);
  ~Replicas();  // ends the worker threads (stop() first)

  bool prefetch_start_page(std::string& why, const std::function<bool()>& give_up = {}) {
    return members_.front()->prefetch_start_page(why, give_up);
  }
  void start();
  // Worker 0's (see Replica::open_sites).
  Replica::OpenedSites open_sites(const config::ReplicaSettings& s, std::unique_ptr<Store> store) {
    return members_.front()->open_sites(s, std::move(store));
  }
  void discard(Replica::OpenedSites opened) { members_.front()->discard(std::move(opened)); }
  void reconfigure(config::ReplicaSettings settings, Replica::OpenedSites sites,
                   const daemon::ObserverReload& observers);
  const daemon::RequestLog& requests() const { return members_.front()->requests(); }
  const config::ReplicaSettings& settings() const { return members_.front()->settings(); }
  // Every worker's [tls] certificates (null when [tls] port is 0).
  daemon::TlsCertificates* tls() const { return tls_.get(); }
  void drain(std::function<void()> done);
  void stop();
  std::string status_line() { return members_.front()->status_line(); }
  // Debug hook (Hooks::stall_worker): true when there is a worker thread.
  bool stall_worker_hook() const { return threads_ != nullptr; }
  void stall_worker() { threads_->stall(0); }
  bool workers_alive(std::chrono::steady_clock::time_point since) const {
    return !threads_ || threads_->all_beat_since(since);
  }

 private:
  uv_loop_t* loop_;
  std::shared_ptr<daemon::Inbox> inbox_;
  std::shared_ptr<net::ServerGroup> connections_ = std::make_shared<net::ServerGroup>();
  std::shared_ptr<daemon::TlsCertificates> tls_;
  std::unique_ptr<daemon::WorkerThreads> threads_;
  std::vector<std::unique_ptr<Replica>> members_;
};

}  // namespace cdn::replica
