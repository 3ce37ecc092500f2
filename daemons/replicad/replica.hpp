// SPDX-License-Identifier: MIT
// The replica daemon's request handling: content, status and metrics over
// the shared HTTP server. A Replica serves one worker loop ([server]
// workers): its server, request log and status watches are its own; the
// content store (thread-safe) is shared by every worker's Replica. The
// Replicas own them all and the worker threads; worker 0 is the main loop.
// The status and metrics pages add up every worker. In origin mode one
// worker serves (the pull-through cache and its request collapsing live on
// one loop; see docs/architecture.md).
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/settings.hpp"
#include "common/log/burst.hpp"
#include "common/net/server.hpp"
#include "common/status/status.hpp"
#include "common/uv/handle.hpp"
#include "daemons/lifecycle.hpp"
#include "daemons/observe.hpp"
#include "daemons/replicad/pull.hpp"
#include "daemons/replicad/store.hpp"
#include "daemons/watch.hpp"
#include "daemons/workers.hpp"

namespace cdn::replica {

// Opens the content named by the settings (a directory or a page); nullptr
// for an origin, which the Replica pulls from itself. Throws std::runtime_error.
std::unique_ptr<Store> open_store(const config::ContentSettings& c);

class Replica {
 public:
  // With [content] origin= the store is null and the Replica pulls through
  // its cache (throws std::runtime_error when the cache cannot be opened).
  // `log`: another worker's writer to share (RequestLog::shared); null: open one.
  // `connections`: what every worker's server shares (net::ServerGroup:
  // open connections, descriptors); null: a group of its own.
  Replica(uv_loop_t* loop, config::ReplicaSettings settings, std::shared_ptr<Store> store,
          const daemon::RequestLog::Prepared* log = nullptr,
          std::shared_ptr<net::ServerGroup> connections = nullptr,
          std::shared_ptr<daemon::TlsCertificates> tls = nullptr);
  // Every worker's Replica (for the pages that add them up); set before any
  // listens, fixed after.
  void set_group(const std::vector<std::unique_ptr<Replica>>* group) { group_ = group; }
  net::Server& server() { return server_; }

  // Origin mode, at start-up: have the start page ("/") in the cache. Runs
  // the loop until it is (true), or the origin failed and no copy exists
  // (false, with `why`), or `give_up` says so (false: a stop signal came
  // during start-up). Always true for a directory or a page.
  bool prefetch_start_page(std::string& why, const std::function<bool()>& give_up = {});

  // Throws std::runtime_error when it cannot listen. `workers`: how many
  // will listen with it (SO_REUSEPORT when more than one).
  daemon::Listening start(uint32_t workers = 1);
  // Another worker's: listen where worker 0 does (it named the replica).
  void start_worker(const daemon::Listening& where);
  // New settings (SIGHUP), already validated; `store` is non-null when the
  // content source changed and was opened successfully; `observers` from
  // prepare_observers() (the access log opened, the token read).
  void reconfigure(config::ReplicaSettings settings, std::shared_ptr<Store> store,
                   const daemon::ObserverReload& observers);
  const daemon::RequestLog& requests() const { return requests_; }
  const config::ReplicaSettings& settings() const { return settings_; }
  const std::shared_ptr<Store>& store() const { return store_; }
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
  void serve_content(net::Exchange& ex, const std::string& path);
  // PURGE (observe.hpp's admit_purge, then the cache's purge).
  void serve_purge(net::Exchange& ex);
  // Reads and digests a file not yet known on the thread pool, then answers.
  void load_then_serve(net::Exchange& ex, const std::string& path);
  void serve_lookup(net::Exchange& ex, const std::string& path, Lookup found);
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
  void answer_pulled(net::Exchange& ex, Answer a);
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
  // Directory or page; null in origin mode. Shared with digest work running
  // on libuv's thread pool, which may outlive a reload that replaces it.
  std::shared_ptr<Store> store_;
  std::unique_ptr<Pull> pull_;                     // origin mode
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
  std::string cache_control_;  // of local content, from [content] max_age
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
  void reconfigure(config::ReplicaSettings settings, std::unique_ptr<Store> store,
                   daemon::ObserverReload observers);
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
