// SPDX-License-Identifier: MIT
#include "daemons/replicad/pull.hpp"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "cdn_config.h"
#include "common/digest/repr_digest.hpp"
#include "common/http/mime.hpp"
#include "common/http/path.hpp"
#include "common/http/serialize.hpp"

namespace cdn::replica {
namespace {

// Bodies of answers that are passed through (404, 301, ...), not cached.
constexpr size_t kPassThroughLimit = 1 << 20;

int64_t seconds(std::chrono::milliseconds d) {
  return std::chrono::duration_cast<std::chrono::seconds>(d).count();
}

cache::Policy policy_of(const config::ContentSettings& c) {
  return cache::Policy{seconds(c.default_ttl), seconds(c.stale_while_revalidate),
                       seconds(c.stale_if_error)};
}

DiskCache::Options cache_options(const config::ContentSettings& c) {
  DiskCache::Options o;
  o.dir = c.cache_dir;
  o.max_bytes = c.cache_size;
  o.memory_bytes = c.cache_memory;
  return o;
}

OriginOptions origin_options(const config::ContentSettings& c) {
  OriginOptions o;
  o.timeout = c.origin_timeout;
  o.ca_file = c.ca_file;
  o.user_agent = "cdn-replicad/" CDN_VERSION;
  return o;
}

}  // namespace

struct Pull::Fetch {
  std::vector<net::Deferred> waiters;
  std::vector<std::function<void(bool, std::string)>> prefetchers;
  std::vector<std::string> request_headers;
  bool conditional = false;
  bool started = false;
  int64_t request_time = 0;
  bool have_head = false;
  OriginHead head;
  cache::Stored stored;
  std::unique_ptr<DiskCache::Writer> writer;
  std::string passthrough;
  std::string local_error;  // why we stopped the transfer ourselves
};

Pull::Pull(uv_loop_t* loop, const config::ContentSettings& c, std::string name, Responder respond)
    : loop_(loop),
      origin_url_(c.origin),
      name_(std::move(name)),
      respond_(std::move(respond)),
      policy_(policy_of(c)),
      default_cache_control_("public, max-age=" + std::to_string(seconds(c.max_age))),
      cache_(cache_options(c)),
      origin_(loop, origin_options(c)) {
  while (!origin_url_.empty() && origin_url_.back() == '/') origin_url_.pop_back();
  if (!c.ca_file.empty() && ::access(c.ca_file.c_str(), R_OK) != 0) {
    throw std::runtime_error("ca_file " + c.ca_file + ": " + std::strerror(errno));
  }
  spdlog::info("cache {}: {} objects, {} bytes ({} corrupt entries dropped)", cache_.dir(),
               cache_.objects(), cache_.bytes(), cache_.corrupt_dropped());
}

Pull::~Pull() = default;

void Pull::reconfigure(const config::ContentSettings& c) {
  policy_ = policy_of(c);
  default_cache_control_ = "public, max-age=" + std::to_string(seconds(c.max_age));
  origin_.set_options(origin_options(c));
}

void Pull::close() {
  origin_.close();
  fetches_.clear();
}

int64_t Pull::now() const {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void Pull::serve(net::Exchange& ex, const std::string& path) {
  std::string key = http::encode_path(path);
  const auto query = http::query_of(ex.request().target);
  if (!query.empty()) key.append("?").append(query);

  if (const auto* e = cache_.find(key)) {
    switch (cache::decide(e->meta.stored, policy_, now())) {
      case cache::Action::Fresh:
        ++stats_.hits;
        answer_entry(ex, *e, "hit");
        return;
      case cache::Action::StaleRevalidate:
        ++stats_.hits;
        ++stats_.stale_served;
        answer_entry(ex, *e, "hit; detail=stale-while-revalidate");
        if (fetches_.find(key) == fetches_.end()) start_fetch(key);  // in the background
        return;
      case cache::Action::Revalidate:
        break;
    }
  }
  ++stats_.misses;
  auto d = ex.defer();
  auto it = fetches_.find(key);
  if (it != fetches_.end()) {
    it->second->waiters.push_back(std::move(d));  // collapsed onto the fetch in flight
    return;
  }
  auto f = std::make_unique<Fetch>();
  f->waiters.push_back(std::move(d));
  fetches_.emplace(key, std::move(f));
  start_fetch(key);
}

void Pull::prefetch(const std::string& path, std::function<void(bool, std::string)> done) {
  const std::string key = http::encode_path(path);
  if (const auto* e = cache_.find(key);
      e != nullptr && cache::decide(e->meta.stored, policy_, now()) == cache::Action::Fresh) {
    done(true, {});
    return;
  }
  auto it = fetches_.find(key);
  if (it != fetches_.end()) {
    it->second->prefetchers.push_back(std::move(done));
    return;
  }
  auto f = std::make_unique<Fetch>();
  f->prefetchers.push_back(std::move(done));
  fetches_.emplace(key, std::move(f));
  start_fetch(key);
}

std::string Pull::url_for(const std::string& key) const { return origin_url_ + key; }

void Pull::start_fetch(const std::string& key) {
  auto it = fetches_.find(key);
  if (it == fetches_.end()) it = fetches_.emplace(key, std::make_unique<Fetch>()).first;
  Fetch* f = it->second.get();
  if (f->started) return;
  f->started = true;
  if (const auto* e = cache_.peek(key)) {
    if (!e->meta.origin_etag.empty()) {
      f->request_headers.push_back("If-None-Match: " + e->meta.origin_etag);
    }
    if (!e->meta.last_modified.empty()) {
      f->request_headers.push_back("If-Modified-Since: " + e->meta.last_modified);
    }
    f->conditional = !f->request_headers.empty();
  }
  f->request_time = now();
  ++stats_.origin_requests;
  const std::string url = url_for(key);
  spdlog::debug("origin fetch {}{}", url, f->conditional ? " (conditional)" : "");
  OriginCallbacks cb;
  cb.head = [this, f](const OriginHead& h) {
    on_head(*f, h);
    return f->local_error.empty();
  };
  cb.body = [f](const char* data, size_t n) {
    if (f->writer) {
      if (!f->writer->write(data, n)) {
        f->local_error = "cache disk failed (" + f->writer->disk_error() +
                         ") and the object is too large to hold in memory";
        return false;
      }
      return true;
    }
    if (f->passthrough.size() + n > kPassThroughLimit) {
      f->local_error = "origin answer too large to pass through";
      return false;
    }
    f->passthrough.append(data, n);
    return true;
  };
  cb.done = [this, key](const OriginResult& r) { finish_fetch(key, r); };
  origin_.fetch(url, f->request_headers, std::move(cb));
}

void Pull::on_head(Fetch& f, const OriginHead& h) {
  f.have_head = true;
  f.head = h;
  cache::Stored& s = f.stored;
  s.status = static_cast<int>(h.status);
  s.cache_control = std::string(h.header("Cache-Control").value_or(""));
  s.date = h.header("Date") ? http::parse_http_date(*h.header("Date")) : -1;
  s.expires = cache::parse_expires(h.header("Expires"));
  s.age = 0;
  if (auto age = h.header("Age")) {
    int64_t v = 0;
    const auto [p, ec] = std::from_chars(age->data(), age->data() + age->size(), v);
    if (ec == std::errc{} && v > 0) s.age = v;
  }
  s.request_time = f.request_time;
  s.response_time = now();
  if (h.status == 200) {
    f.writer = cache_.begin();
    if (!f.writer) f.local_error = std::string("cannot buffer the body: ") + std::strerror(errno);
  }
}

void Pull::answer_entry(net::Exchange& ex, const DiskCache::Entry& e, std::string status) {
  Answer a;
  a.object = e.object;
  if (!e.object->in_memory && e.meta.size > 0 && !ex.is_head()) {
    a.fd = cache_.open(e);
    if (a.fd < 0) {
      spdlog::warn("cache body of {} vanished ({}): dropping the entry", e.meta.key,
                   std::strerror(errno));
      const std::string key = e.meta.key;
      cache_.erase(key);
      ex.reply(503, "cached copy is being replaced, try again", {{"Retry-After", "1"}});
      return;
    }
  }
  a.cache_control =
      e.meta.stored.cache_control.empty() ? default_cache_control_ : e.meta.stored.cache_control;
  a.age = cache::current_age(e.meta.stored, now());
  a.cache_status = name_ + "; " + status;
  respond_(ex, std::move(a));
}

void Pull::answer_error(net::Exchange& ex, Fetch& f, const DiskCache::Entry& e) {
  ++stats_.stale_served;
  const std::string fwd =
      f.have_head ? "; fwd-status=" + std::to_string(f.head.status) : std::string();
  answer_entry(ex, e, "fwd=stale" + fwd + "; detail=stale-if-error");
}

void Pull::finish_fetch(const std::string& key, const OriginResult& r) {
  auto node = fetches_.extract(key);
  if (node.empty()) return;
  Fetch& f = *node.mapped();
  const std::string url = url_for(key);
  const long status = f.have_head ? f.head.status : 0;

  std::string failure;  // non-empty: the origin failed us
  int error_status = 502;
  if (!f.local_error.empty()) {
    failure = f.local_error;
    error_status = 503;
  } else if (r.error == OriginError::Timeout) {
    failure = "origin timed out: " + r.message;
    error_status = 504;
  } else if (r.error != OriginError::None) {
    failure = "origin unreachable: " + r.message;
  } else if (status >= 500) {
    failure = "origin answered " + std::to_string(status);
  } else if (status == 304 && (!f.conditional || cache_.peek(key) == nullptr)) {
    failure = "origin answered 304 to a request that was not conditional";
  }
  if (failure.empty() && status == 200) {
    f.writer->finish();
    if (auto rd = f.head.header("Repr-Digest")) {
      const std::string want = digest::sha256_from_repr_digest(*rd);
      if (!want.empty() && want != f.writer->digest()) {
        failure = "origin body does not match its Repr-Digest (" + want + ")";
      }
    }
  }

  if (!failure.empty()) {
    ++stats_.origin_errors;
    spdlog::warn("{}: {}", url, failure);
    for (auto& d : f.waiters) {
      auto* ex = d.exchange();
      if (ex == nullptr) continue;
      const auto* e = cache_.find(key);
      if (e != nullptr && cache::usable_on_error(e->meta.stored, policy_, now())) {
        answer_error(*ex, f, *e);
      } else {
        // The reason phrase only: `failure` names the origin's URL and the
        // library's error text, which are the operators' (logged above).
        ex->reply(error_status, http::reason_phrase(error_status), {{"Cache-Control", "no-store"}});
      }
    }
    const bool have_copy = cache_.peek(key) != nullptr;
    for (auto& p : f.prefetchers) p(have_copy, failure);
    return;
  }

  if (status == 304) {
    const auto* old = cache_.peek(key);
    const auto* e = cache_.refresh(key, cache::refreshed(old->meta.stored, f.stored,
                                                         f.head.header("Cache-Control").has_value(),
                                                         f.head.header("Expires").has_value()));
    ++stats_.revalidated;
    spdlog::debug("{}: 304, copy refreshed", url);
    for (auto& d : f.waiters) {
      if (auto* ex = d.exchange())
        answer_entry(*ex, *cache_.peek(key), "fwd=stale; fwd-status=304");
    }
    (void)e;
    for (auto& p : f.prefetchers) p(true, {});
    return;
  }

  if (status == 200) {
    EntryMeta meta;
    meta.key = key;
    meta.stored = f.stored;
    meta.origin_etag = std::string(f.head.header("ETag").value_or(""));
    if (!meta.origin_etag.empty() && !meta.origin_etag.starts_with("W/")) {
      meta.etag = meta.origin_etag;  // strong: the same validator on every tier
    }
    meta.last_modified = std::string(f.head.header("Last-Modified").value_or(""));
    meta.content_type = std::string(f.head.header("Content-Type").value_or(""));
    const bool was_cached = cache_.peek(key) != nullptr;
    const std::string fwd = was_cached ? "fwd=stale" : "fwd=uri-miss";
    if (cache::storable(f.stored)) {
      if (const auto* e = cache_.commit(*f.writer, meta)) {
        for (auto& d : f.waiters) {
          const auto* cur = cache_.peek(key);
          if (auto* ex = d.exchange(); ex != nullptr && cur != nullptr) {
            answer_entry(*ex, *cur, fwd + "; fwd-status=200; stored");
          }
        }
        (void)e;
        for (auto& p : f.prefetchers) p(true, {});
        return;
      }
      spdlog::warn("{}: not cached: {}", url,
                   f.writer->on_disk() ? std::strerror(errno)
                                       : "cache disk failed (" + f.writer->disk_error() + ")");
    } else {
      cache_.erase(key);  // the origin no longer lets us keep it
    }
    // Served from the fetched bytes, not stored.
    auto obj = std::make_shared<Object>();
    obj->rel = key;
    obj->size = f.writer->size();
    obj->digest = f.writer->digest();
    obj->etag = meta.etag.empty() ? DiskCache::etag_of(f.writer->digest_hex()) : meta.etag;
    obj->content_type = meta.content_type.empty() ? http::mime_type(key.substr(0, key.find('?')))
                                                  : meta.content_type;
    const int64_t lm = meta.last_modified.empty() ? -1 : http::parse_http_date(meta.last_modified);
    obj->mtime = lm >= 0 ? lm : f.stored.response_time;
    obj->last_modified = http::http_date(obj->mtime);
    obj->in_memory = f.writer->in_memory();
    if (obj->in_memory) obj->body = f.writer->memory();
    for (auto& d : f.waiters) {
      auto* ex = d.exchange();
      if (ex == nullptr) continue;
      Answer a;
      a.object = obj;
      if (!obj->in_memory && !ex->is_head()) a.fd = f.writer->dup_fd();
      a.cache_control = f.stored.cache_control.empty() ? "no-store" : f.stored.cache_control;
      a.cache_status = name_ + "; " + fwd + "; fwd-status=200";
      respond_(*ex, std::move(a));
    }
    for (auto& p : f.prefetchers) p(true, {});
    return;
  }

  // Anything else (404, 301, 403, ...) is passed through, not stored.
  if (status == 404 || status == 410) cache_.erase(key);
  const std::string ct(f.head.header("Content-Type").value_or("text/plain; charset=utf-8"));
  const std::string cc(f.head.header("Cache-Control").value_or("no-store"));
  const auto location = f.head.header("Location");
  for (auto& d : f.waiters) {
    auto* ex = d.exchange();
    if (ex == nullptr) continue;
    auto& h = ex->begin(static_cast<int>(status));
    h.header("Content-Type", ct);
    h.header("Content-Length", static_cast<uint64_t>(f.passthrough.size()));
    h.header("Cache-Control", cc);
    if (location) h.header("Location", *location);
    h.header("CDN-Replica", name_);
    h.header("Cache-Status", name_ + "; fwd=uri-miss; fwd-status=" + std::to_string(status));
    ex->finish(f.passthrough);
  }
  if (status != 200) spdlog::info("{}: origin answered {}", url, status);
  for (auto& p : f.prefetchers) p(true, {});
}

}  // namespace cdn::replica
