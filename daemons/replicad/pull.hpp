// SPDX-License-Identifier: MIT
// Pull-through from an origin: the replica's content when [content] origin=
// is set. Joins the cache policy (cache.hpp), the disk cache
// (disk_cache.hpp) and origin fetches (origin.hpp):
//
// - hit, fresh: answered at once from the cache (memory tier or sendfile);
// - hit, stale within stale-while-revalidate: answered at once, and one
//   background revalidation is started;
// - miss or stale: the request waits (net::Deferred) on the one fetch in
//   flight for that key (request collapsing), which is conditional when a
//   copy exists (If-None-Match / If-Modified-Since; 304 refreshes it);
// - origin unreachable, timing out or answering 5xx: a stale copy within
//   stale-if-error is served, else 502 / 504.
//
// Lives on the main loop; owned by worker 0's Replica (the Site), shared by
// every worker through PullClient. close() aborts fetches.
#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/config/settings.hpp"
#include "common/metrics/counter.hpp"
#include "common/net/server.hpp"
#include "common/purge/purge.hpp"
#include "daemons/replicad/cache.hpp"
#include "daemons/replicad/disk_cache.hpp"
#include "daemons/replicad/fill.hpp"
#include "daemons/replicad/origin.hpp"
#include "daemons/workers.hpp"

namespace cdn::replica {

// An object to answer with; the Replica applies conditionals and Range.
struct Answer {
  std::shared_ptr<const Object> object;
  int fd = -1;       // owned: the body file, or -1 when the object is in memory
  int status = 200;  // the origin's
  // The origin's end-to-end fields, relayed (the object's validators and
  // type are not sent again from the Object). A copy: the answer may be
  // made on another worker's loop.
  std::vector<http::Header> headers;
  int64_t age = -1;          // Age header (seconds), -1: none
  std::string cache_status;  // RFC 9211 Cache-Status parameters ("hit", "fwd=uri-miss", ...)
  // Non-null: the body is still arriving in `fd` (read-while-writer); the
  // object's size is the origin's Content-Length, if any.
  std::shared_ptr<FillProgress> fill;
  // With `fill`: the body's first bytes, which the file may not hold yet
  // (sent from here: the head does not wait for their disk write).
  std::shared_ptr<const std::string> first;
};

// Written by the Pull's loop; read by every worker's pages.
struct PullStats {
  metrics::OwnCounter hits = 0;          // answered from the cache without waiting for the origin
  metrics::OwnCounter misses = 0;        // waited for the origin (miss or revalidation)
  metrics::OwnCounter stale_served = 0;  // stale copies served (while revalidating or on error)
  metrics::OwnCounter revalidated = 0;   // 304s that refreshed a copy
  metrics::OwnCounter origin_requests = 0;
  metrics::OwnCounter origin_cancelled = 0;  // fetches stopped because every client had gone
  metrics::OwnCounter origin_errors = 0;     // unreachable, timeout, 5xx, bad digest
};

// One client's request handed to the Pull, which lives on the main loop
// while clients come to every worker ([server] workers): a copy of the
// request, and the calls that answer it. Each answer runs on the client's
// own loop: at once when that is the Pull's, else posted to `home` (the
// inbox of the client's loop), where it finds the exchange through its
// Deferred (gone: dropped, and a descriptor it carried closed).
class PullClient {
 public:
  using Responder = std::function<void(net::Exchange&, Answer)>;
  // Defers `ex`. `respond`: the client's Replica's answer with an object.
  // `on_gone` (Pull::departures): runs on the client's loop when it leaves
  // before its answer began (net::Exchange::defer's on_gone).
  PullClient(net::Exchange& ex, Responder respond, std::shared_ptr<daemon::Inbox> home,
             std::function<void()> on_gone);
  const http::Request& request() const { return request_; }
  bool is_head() const { return request_.method == "HEAD"; }
  // The client went away: known from any thread once its connection
  // closed; on its own loop also once it was answered.
  bool gone() const {
    return left_->load(std::memory_order_relaxed) || (!home_ && d_.exchange() == nullptr);
  }
  void respond(Answer a);
  void reply(int status, std::string_view text,
             std::initializer_list<std::pair<std::string_view, std::string_view>> headers = {});
  void interim(int status, std::vector<http::Header> fields);

 private:
  void run(std::function<void(net::Exchange&)> fn);
  http::Request request_;
  net::Deferred d_;
  Responder respond_;
  std::shared_ptr<daemon::Inbox> home_;  // null: the Pull's own loop
  std::shared_ptr<std::atomic<bool>> left_;
};
using Waiter = std::shared_ptr<PullClient>;
inline PullClient* live(const Waiter& w) { return w && !w->gone() ? w.get() : nullptr; }

class Pull {
 public:
  // Throws std::runtime_error when the cache directory cannot be used.
  Pull(uv_loop_t* loop, const config::ContentSettings& c, std::string name);
  ~Pull();
  Pull(const Pull&) = delete;
  Pull& operator=(const Pull&) = delete;

  // Answers a request for a normalised path (query kept from the target).
  // On the Pull's loop; the client may be another worker's.
  void serve(const Waiter& client, const std::string& path);
  // Start-up: makes sure `path` is in the cache. done(true, "") when it is
  // (fetched, revalidated, or a stale copy exists while the origin fails);
  // done(false, why) when the origin failed and no copy exists.
  void prefetch(const std::string& path, std::function<void(bool, std::string)> done);
  // New settings (reload): freshness policy, limits for new fetches.
  void reconfigure(const config::ContentSettings& c);
  // What a PullClient's on_gone calls, from the client's loop: schedules
  // sweep() on the Pull's (posted through `via`, the main loop's inbox, when
  // the client is another worker's; null: the same loop).
  std::function<void()> departures(std::shared_ptr<daemon::Inbox> via);
  // Applies a purge to the cache (its paths are turned into cache keys);
  // returns how many objects it named.
  size_t purge(const purge::Request& r);
  void close();
  void set_name(std::string name) { name_ = std::move(name); }

  std::string source() const { return "origin:" + origin_url_ + "/"; }
  const PullStats& stats() const { return stats_; }
  const DiskCache& cache() const { return cache_; }

 private:
  struct Fetch;
  std::string url_for(const std::string& key) const;
  void start_fetch(const std::string& slot);
  void on_head(Fetch& f, const OriginHead& h);
  // A 200 going to disk: the fill its clients stream (fill.hpp), and the
  // waiters that can be streamed to are answered from it now.
  // `first`: the body's first piece, not written yet; the clients answered
  // now send it from memory.
  void start_fill(Fetch& f, std::string_view first);
  // A client collapsed onto `f` after its head came: streamed, when it can be.
  bool join_fill(PullClient& ex, Fetch& f);
  void answer_fill(PullClient& ex, Fetch& f,
                   const std::shared_ptr<const std::string>& first = nullptr);
  void finish_fetch(const std::string& slot, const OriginResult& r);
  // A successful unsafe method: drops the stored answers it makes stale.
  void invalidate(const Fetch& f);
  // Cache-Status's fwd= for a fetch (RFC 9211): bypass, stale (a stored
  // variant was revalidated), vary-miss (the URL holds other variants only)
  // or uri-miss.
  std::string_view forwarded(const Fetch& f) const;
  // The stored variant a conditional fetch revalidates; nullptr when it
  // was not conditional or that variant has gone meanwhile.
  const DiskCache::Entry* revalidated(const Fetch& f) const;
  // The waiters of `f` whose request selects another variant of its
  // response (Vary) than the one it was fetched for, taken out of `f`.
  std::vector<Waiter> take_other_variants(Fetch& f);
  // A fetch of its own for waiters that did not get theirs from another.
  void refetch(const std::string& key, std::vector<Waiter> waiters);
  // Cancels the fetches whose clients have all gone (see abandoned()).
  void sweep();
  bool abandoned(const Fetch& f) const;
  // `as_received`: the stored Age line is relayed (the fetch's own clients)
  // instead of one computed now.
  void answer_entry(PullClient& ex, const DiskCache::Entry& e, const std::string& status,
                    bool as_received = false);
  void answer_error(PullClient& ex, Fetch& f, const DiskCache::Entry& e);
  int64_t now() const;
  // The outcomes of the cache's jobs applied, failures logged.
  void reap_cache();

  uv_loop_t* loop_;
  std::string origin_url_;  // ends without '/' (the path is appended)
  std::string name_;
  bool closed_ = false;
  cache::Policy policy_;
  // Where the cache's thread has the loop reap its jobs' outcomes; closed
  // by close(). Before cache_: its wake posts here.
  std::shared_ptr<daemon::Inbox> cache_inbox_;
  DiskCache cache_;
  Origin origin_;
  // Keyed by cache key; a private (Authorization) fetch has a slot of its own.
  std::unordered_map<std::string, std::unique_ptr<Fetch>> fetches_;
  uint64_t private_fetches_ = 0;
  uv::Ptr<uv_timer_t> sweep_timer_;  // closed by close()
  // What the waiters' on_gone reach: null once closed (a connection may
  // close after this Pull, at the daemon's stop).
  std::shared_ptr<Pull*> self_;
  PullStats stats_;
  // Fills passed through now (the Pull's loop only; shared with the Fetches'
  // slots, which may outlive this).
  std::shared_ptr<int> passing_ = std::make_shared<int>(0);
};

}  // namespace cdn::replica
