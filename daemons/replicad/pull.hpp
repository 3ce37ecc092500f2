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
// Lives on the loop thread; owned by the Replica. close() aborts fetches.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/config/settings.hpp"
#include "common/net/server.hpp"
#include "common/purge/purge.hpp"
#include "daemons/replicad/cache.hpp"
#include "daemons/replicad/disk_cache.hpp"
#include "daemons/replicad/origin.hpp"

namespace cdn::replica {

// An object to answer with; the Replica applies conditionals and Range.
struct Answer {
  std::shared_ptr<const Object> object;
  int fd = -1;       // owned: the body file, or -1 when the object is in memory
  int status = 200;  // the origin's
  // The origin's end-to-end fields, relayed (the object's validators and
  // type are not sent again from the Object). Borrowed: valid only during
  // the Responder call, which writes the head at once.
  http::Fields headers;
  int64_t age = -1;          // Age header (seconds), -1: none
  std::string cache_status;  // RFC 9211 Cache-Status parameters ("hit", "fwd=uri-miss", ...)
};

struct PullStats {
  uint64_t hits = 0;          // answered from the cache without waiting for the origin
  uint64_t misses = 0;        // waited for the origin (miss or revalidation)
  uint64_t stale_served = 0;  // stale copies served (while revalidating or on error)
  uint64_t revalidated = 0;   // 304s that refreshed a copy
  uint64_t origin_requests = 0;
  uint64_t origin_cancelled = 0;  // fetches stopped because every client had gone
  uint64_t origin_errors = 0;     // unreachable, timeout, 5xx, bad digest
};

class Pull {
 public:
  using Responder = std::function<void(net::Exchange&, Answer)>;

  // Throws std::runtime_error when the cache directory cannot be used.
  Pull(uv_loop_t* loop, const config::ContentSettings& c, std::string name, Responder respond);
  ~Pull();
  Pull(const Pull&) = delete;
  Pull& operator=(const Pull&) = delete;

  // Answers a GET/HEAD for a normalised path (query kept from the target).
  void serve(net::Exchange& ex, const std::string& path);
  // Start-up: makes sure `path` is in the cache. done(true, "") when it is
  // (fetched, revalidated, or a stale copy exists while the origin fails);
  // done(false, why) when the origin failed and no copy exists.
  void prefetch(const std::string& path, std::function<void(bool, std::string)> done);
  // New settings (reload): freshness policy, limits for new fetches.
  void reconfigure(const config::ContentSettings& c);
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
  void finish_fetch(const std::string& slot, const OriginResult& r);
  // A successful unsafe method: drops the stored answers it makes stale.
  void invalidate(const Fetch& f);
  // The waiters of `f` whose request selects another variant of its
  // response (Vary) than the one it was fetched for, taken out of `f`.
  std::vector<net::Deferred> take_other_variants(Fetch& f);
  // A fetch of its own for waiters that did not get theirs from another.
  void refetch(const std::string& key, std::vector<net::Deferred> waiters);
  // A client waiting on a fetch: its departure (net::Exchange::defer's
  // on_gone) schedules sweep() on the next loop turn.
  net::Deferred wait_on(net::Exchange& ex);
  // Cancels the fetches whose clients have all gone (see abandoned()).
  void sweep();
  bool abandoned(const Fetch& f) const;
  // `as_received`: the stored Age line is relayed (the fetch's own clients)
  // instead of one computed now.
  void answer_entry(net::Exchange& ex, const DiskCache::Entry& e, std::string status,
                    bool as_received = false);
  void answer_error(net::Exchange& ex, Fetch& f, const DiskCache::Entry& e);
  int64_t now() const;

  uv_loop_t* loop_;
  std::string origin_url_;  // ends without '/' (the path is appended)
  std::string name_;
  Responder respond_;
  cache::Policy policy_;
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
};

}  // namespace cdn::replica
