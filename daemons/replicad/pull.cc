// SPDX-License-Identifier: MIT
#include "daemons/replicad/pull.hpp"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "cdn_config.h"
#include "common/digest/repr_digest.hpp"
#include "common/http/fields.hpp"
#include "common/http/path.hpp"
#include "common/http/serialize.hpp"
#include "daemons/replicad/fill_stream.hpp"

namespace cdn::replica {
namespace {

// Request fields a cache fetch must not take from its first client: the
// cache asks its own conditionals and stores whole answers.
bool is_client_conditional(std::string_view name) {
  for (std::string_view c : {"If-None-Match", "If-Modified-Since", "If-Match",
                             "If-Unmodified-Since", "If-Range", "Range"}) {
    if (http::iequals(name, c)) return true;
  }
  return false;
}

// The client's end-to-end request fields as curl header lines, with our
// Via hop. Host is the origin's (curl sets it from the URL); Expect is
// answered here. Accept-Encoding goes as the client sent it: an origin
// that varies on it answers each variant (stored and served as the bytes
// it sent, Content-Encoding relayed); without one the fetch asks identity.
std::vector<std::string> forwarded_fields(const http::Request& req, bool shared_fetch,
                                          const std::string& name) {
  std::vector<std::string> out;
  std::string via;
  for (const auto& [k, v] : http::end_to_end(req.headers)) {
    if (http::iequals(k, "Host") || http::iequals(k, "Expect") ||
        (shared_fetch && is_client_conditional(k))) {
      continue;
    }
    if (http::iequals(k, "Via")) {
      via.append(v).append(", ");
      continue;
    }
    // curl sends "Name:" lines as a removal; "Name;" is an empty field.
    std::string line(k);
    line.append(v.empty() ? ";" : ": ").append(v);
    out.push_back(std::move(line));
  }
  out.push_back("Via: " + via + "1.1 " + name);
  return out;
}

int64_t seconds(std::chrono::milliseconds d) {
  return std::chrono::duration_cast<std::chrono::seconds>(d).count();
}

// An override of 0 is off: nothing granted beyond what the origin said.
std::optional<int64_t> override_of(std::chrono::milliseconds d) {
  return seconds(d) > 0 ? std::optional<int64_t>(seconds(d)) : std::nullopt;
}

cache::Policy policy_of(const config::ContentSettings& c) {
  cache::Policy p;
  p.default_ttl = override_of(c.default_ttl);
  p.stale_while_revalidate = override_of(c.stale_while_revalidate);
  p.stale_if_error = override_of(c.stale_if_error);
  p.stale_if_disconnected = seconds(c.stale_if_disconnected);
  return p;
}

// `wake`: the cache's thread has outcomes for the loop (DiskCache::reap).
DiskCache::Options cache_options(const config::ContentSettings& c, std::function<void()> wake) {
  DiskCache::Options o;
  o.wake = std::move(wake);
  o.dir = c.cache_dir;
  o.max_bytes = c.cache_size;
  o.memory_bytes = c.cache_memory;
  o.max_entries = c.cache_entries;
  o.max_variants = c.max_variants;
  return o;
}

OriginOptions origin_options(const config::ContentSettings& c) {
  OriginOptions o;
  o.timeout = c.origin_timeout;
  o.min_rate = c.origin_min_rate;
  o.ca_file = c.ca_file;
  o.user_agent = "cdn-replicad/" CDN_VERSION;
  return o;
}

}  // namespace

struct Pull::Fetch {
  std::string method = "GET";
  std::string body;  // the client's request body, forwarded
  std::string host;  // the client's Host: Location values naming it are same-origin
  std::vector<Waiter> waiters;
  std::vector<std::function<void(bool, std::string)>> prefetchers;
  std::vector<std::string> request_headers;  // to the origin, as curl lines
  // The first client's request fields: what the response's Vary selects on,
  // and what storable() reads (no-store, Authorization).
  std::vector<http::Header> client;
  bool client_waits = false;  // waiters[0] is the client whose request was forwarded
  std::string target;         // origin path + query, and the cache key unless private_
  bool private_ = false;      // for a request with Authorization: never stored nor shared
  bool conditional = false;
  // The stored variant the request selected (`selected`), whose validators
  // a conditional fetch sent: what a 304 refreshes.
  bool selected = false;
  std::string revalidating;
  bool started = false;
  int64_t request_time = 0;
  bool have_head = false;
  OriginHead head;
  std::vector<http::Header> head_fields;  // head.headers as http::Header
  cache::Stored stored;
  std::unique_ptr<DiskCache::Writer> writer;
  std::string local_error;        // why we stopped the transfer ourselves
  uint64_t purge_generation = 0;  // the cache's when the fetch started
  // A 200 whose body goes to disk: its clients stream it as it comes
  // (read-while-writer). Failed if the fetch ends any other way than whole.
  std::shared_ptr<FillProgress> fill;
  std::shared_ptr<const Object> fill_object;  // what the streamed answers describe
  std::vector<http::Header> fill_fields;      // their relayed fields
  std::string fill_status;                    // their Cache-Status parameters
  uint64_t streamed = 0;                      // answers streaming the fill (not HEAD)
  std::shared_ptr<void> pass_slot;            // one of kMaxPassing while passed through
  uint64_t transfer = 0;                      // Origin's id of the transfer, for cancel()
  uint64_t received = 0;                      // body bytes so far

  ~Fetch() {
    if (fill) fill->fail();
  }
};

namespace {
// A fetch whose clients have all gone is finished for the cache anyway when
// no more than this is left of a body of known length (cheaper than asking
// again); any other is cancelled, freeing its origin connection at once.
constexpr uint64_t kFinishForCache = 1 << 20;
// A body held neither on disk nor in spill memory goes on to the clients
// streaming it through this much memory (the newest bytes; a client further
// behind the origin is cut).
constexpr uint64_t kPassWindow = 4 << 20;
// At most this many fills are passed through at once (their windows are
// memory too); past it a body that cannot be held fails as before.
constexpr int kMaxPassing = 4;

// The origin's Content-Length (the origin adapter refuses two different
// ones), nullopt when it sent none or one that is not a number.
std::optional<uint64_t> content_length(const OriginHead& h) {
  const auto cl = h.header("Content-Length");
  uint64_t v = 0;
  if (!cl) return std::nullopt;
  const auto [end, ec] = std::from_chars(cl->data(), cl->data() + cl->size(), v);
  if (ec != std::errc() || end != cl->data() + cl->size()) return std::nullopt;
  return v;
}
}  // namespace

PullClient::PullClient(net::Exchange& ex, Responder respond, std::shared_ptr<daemon::Inbox> home,
                       std::function<void()> on_gone)
    : request_(ex.request()),
      respond_(std::move(respond)),
      home_(std::move(home)),
      left_(std::make_shared<std::atomic<bool>>(false)) {
  d_ = ex.defer([left = left_, on_gone = std::move(on_gone)] {
    left->store(true, std::memory_order_relaxed);
    if (on_gone) on_gone();
  });
}

void PullClient::run(std::function<void(net::Exchange&)> fn) {
  if (!home_) {
    if (auto* ex = d_.exchange()) fn(*ex);
    return;
  }
  home_->post([d = d_, fn = std::move(fn)] {
    if (auto* ex = d.exchange()) fn(*ex);
  });
}

namespace {
// An Answer on its way to another loop: its descriptor is closed if it is
// never sent (the client left, or that loop stopped).
struct PostedAnswer {
  Answer a;
  explicit PostedAnswer(Answer x) : a(std::move(x)) {}
  ~PostedAnswer() {
    if (a.fd >= 0) ::close(a.fd);
  }
  PostedAnswer(const PostedAnswer&) = delete;
  PostedAnswer& operator=(const PostedAnswer&) = delete;
};
}  // namespace

void PullClient::respond(Answer a) {
  auto posted = std::make_shared<PostedAnswer>(std::move(a));
  run([posted, respond = respond_](net::Exchange& ex) {
    respond(ex, std::move(posted->a));
    posted->a.fd = -1;  // the responder's now
  });
}

void PullClient::reply(
    int status, std::string_view text,
    std::initializer_list<std::pair<std::string_view, std::string_view>> headers) {
  std::vector<std::pair<std::string, std::string>> fields;
  for (const auto& [k, v] : headers) fields.emplace_back(k, v);
  run([status, text = std::string(text), fields = std::move(fields)](net::Exchange& ex) {
    auto& h = ex.begin(status);
    h.header("Content-Type", "text/plain; charset=utf-8");
    for (const auto& [k, v] : fields) h.header(k, v);
    h.header("Content-Length", static_cast<uint64_t>(text.size() + 1));
    ex.finish(text + "\n");
  });
}

void PullClient::interim(int status, std::vector<http::Header> fields) {
  run([status, fields = std::move(fields)](net::Exchange& ex) { ex.interim(status, fields); });
}

Pull::Pull(uv_loop_t* loop, const config::ContentSettings& c, std::string name)
    : loop_(loop),
      origin_url_(c.origin),
      name_(std::move(name)),
      policy_(policy_of(c)),
      cache_inbox_(daemon::Inbox::make(loop)),
      // Posts are dropped once the inbox is closed (close(), ~Pull), so
      // `this` is never reached after it.
      cache_(cache_options(
          c, [inbox = cache_inbox_, this] { inbox->post([this] { reap_cache(); }); })),
      origin_(loop, origin_options(c)),
      self_(std::make_shared<Pull*>(this)) {
  sweep_timer_ = uv::make_timer(loop_, [this] { sweep(); });
  cache_.keep_spare();
  while (!origin_url_.empty() && origin_url_.back() == '/') origin_url_.pop_back();
  if (!c.ca_file.empty() && ::access(c.ca_file.c_str(), R_OK) != 0) {
    throw std::runtime_error("ca_file " + c.ca_file + ": " + std::strerror(errno));
  }
  spdlog::info("cache {}: {} objects, {} bytes ({} corrupt entries, {} of an older format dropped)",
               cache_.dir(), cache_.objects(), cache_.bytes(), cache_.corrupt_dropped(),
               cache_.outdated_dropped());
}

Pull::~Pull() {
  *self_ = nullptr;
  cache_inbox_->close();
}

void Pull::reconfigure(const config::ContentSettings& c) {
  policy_ = policy_of(c);
  origin_.set_options(origin_options(c));
}

void Pull::close() {
  closed_ = true;
  *self_ = nullptr;
  sweep_timer_.reset();
  origin_.close();
  fetches_.clear();
  // The commits queued are done (a reload may open this directory again).
  for (const auto& line : cache_.settle()) spdlog::warn("cache {}: {}", cache_.dir(), line);
  cache_inbox_->close();
}

void Pull::reap_cache() {
  for (const auto& line : cache_.reap()) spdlog::warn("cache {}: {}", cache_.dir(), line);
}

std::function<void()> Pull::departures(std::shared_ptr<daemon::Inbox> via) {
  // Not now: the connection may be closing inside one of our own calls.
  auto schedule = [weak = std::weak_ptr<Pull*>(self_)] {
    auto p = weak.lock();
    if (!p || *p == nullptr || !(*p)->sweep_timer_) return;
    uv::timer_start((*p)->sweep_timer_.get(), 0, 0);
  };
  if (!via) return schedule;
  return [via = std::move(via), schedule] { via->post(schedule); };
}

bool Pull::abandoned(const Fetch& f) const {
  // Background revalidations and prefetches have no client to lose; an
  // unsafe method goes on, its effect on the origin and the cache is owed.
  if (f.waiters.empty() || !f.prefetchers.empty() || !f.started) return false;
  if (f.method != "GET" && f.method != "HEAD") return false;
  for (const auto& w : f.waiters) {
    if (live(w) != nullptr) return false;
  }
  if (f.have_head && !f.private_ && f.method == "GET") {
    const auto length = content_length(f.head);
    if (length && *length >= f.received && *length - f.received <= kFinishForCache &&
        cache::storable("GET", f.client, static_cast<int>(f.head.status), f.head_fields, policy_) ==
            cache::Verdict::Storable) {
      return false;
    }
  }
  return true;
}

void Pull::sweep() {
  std::vector<std::string> gone;
  for (const auto& [slot, f] : fetches_) {
    if (abandoned(*f)) gone.push_back(slot);
  }
  for (const auto& slot : gone) {
    auto node = fetches_.extract(slot);
    ++stats_.origin_cancelled;
    spdlog::debug("{}: every client left, fetch cancelled", url_for(node.mapped()->target));
    origin_.cancel(node.mapped()->transfer);
  }
}

namespace {
// The purge index's clock: only differences matter (how long a purge is
// remembered for the fetches in flight).
int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

size_t Pull::purge(const purge::Request& r) {
  purge::Request k = r;
  if (r.scope == purge::Scope::Url) {
    const size_t q = r.target.find('?');
    k.target = http::encode_path(std::string_view(r.target).substr(0, q));
    if (q != std::string::npos) k.target.append(r.target, q);
  } else if (r.scope == purge::Scope::Prefix) {
    // Byte by byte, so a path's prefix is its key's prefix.
    k.target = http::encode_path(r.target);
  }
  return cache_.purge(k, now_ms());
}

int64_t Pull::now() const {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void Pull::serve(const Waiter& client, const std::string& path) {
  PullClient& ex = *client;
  if (closed_) {  // a site a reload replaced: its worker asked before it knew
    ex.reply(503, "try again", {{"Retry-After", "1"}});
    return;
  }
  const auto& req = ex.request();
  std::string key = http::encode_path(path);
  const auto query = http::query_of(req.target);
  if (!query.empty()) key.append("?").append(query);

  const auto auth = req.header("Authorization");
  const bool cacheable_method = req.method == "GET" || req.method == "HEAD";
  if (auth || !cacheable_method) {
    // RFC 9111 §3.5: an answer to an authorized request is one user's; it
    // goes to the origin with the credentials, alone (no collapsing onto
    // another user's fetch), and is neither served from nor put in the cache.
    // Other methods are forwarded the same way (§4.4 invalidates on success).
    ++stats_.misses;
    auto f = std::make_unique<Fetch>();
    f->target = key;
    f->private_ = true;
    if (!cacheable_method) {
      f->method = req.method;
      f->body = req.body;
    }
    f->host = std::string(req.header("Host").value_or(""));
    f->request_headers = forwarded_fields(req, cacheable_method, name_);
    f->client = req.headers;
    f->waiters.push_back(client);
    const std::string slot = "\x01private " + std::to_string(++private_fetches_);
    fetches_.emplace(slot, std::move(f));
    start_fetch(slot);
    return;
  }

  // The stored response this request selects among the URL's variants.
  const auto* e = cache_.find(key, req.headers);
  const cache::Action decided =
      e != nullptr
          ? cache::decide(e->meta.stored, policy_, now(), req.headers)
          : (cache::parse_cache_control(req.headers).only_if_cached ? cache::Action::GatewayTimeout
                                                                    : cache::Action::Revalidate);
  // A soft purge: what was fresh is served as stale while one revalidation
  // runs (no stampede on the origin).
  const cache::Action action =
      e != nullptr && cache_.soft_purged(*e) &&
              (decided == cache::Action::Fresh || decided == cache::Action::Stale)
          ? cache::Action::StaleRevalidate
          : decided;
  switch (action) {
    case cache::Action::Fresh:
      ++stats_.hits;
      answer_entry(ex, *e, "hit");
      return;
    case cache::Action::Stale:  // the request's max-stale allows it
      ++stats_.hits;
      ++stats_.stale_served;
      answer_entry(ex, *e, "hit; detail=max-stale");
      return;
    case cache::Action::StaleRevalidate:
      ++stats_.hits;
      ++stats_.stale_served;
      answer_entry(ex, *e, "hit; detail=stale-while-revalidate");
      if (fetches_.find(key) == fetches_.end()) {  // in the background
        auto f = std::make_unique<Fetch>();
        f->request_headers = forwarded_fields(req, true, name_);
        f->client = req.headers;
        fetches_.emplace(key, std::move(f));
        start_fetch(key);
      }
      return;
    case cache::Action::GatewayTimeout:  // RFC 9111 5.2.1.7
      ex.reply(504, "only-if-cached: no usable stored response\n",
               {{"Cache-Control", "no-store"}, {"Cache-Status", name_ + "; fwd=miss"}});
      return;
    case cache::Action::Revalidate:
      break;
  }
  ++stats_.misses;
  auto d = client;
  auto it = fetches_.find(key);
  if (it != fetches_.end()) {
    // Collapsed onto the fetch in flight: streamed from its file when its
    // body is coming, else answered at its end.
    if (!join_fill(ex, *it->second)) it->second->waiters.push_back(std::move(d));
    return;
  }
  auto f = std::make_unique<Fetch>();
  f->waiters.push_back(std::move(d));
  f->request_headers = forwarded_fields(req, true, name_);
  f->client = req.headers;
  f->client_waits = true;
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

void Pull::start_fetch(const std::string& slot) {
  auto it = fetches_.find(slot);
  if (it == fetches_.end()) it = fetches_.emplace(slot, std::make_unique<Fetch>()).first;
  Fetch* f = it->second.get();
  if (f->started) return;
  f->started = true;
  f->purge_generation = cache_.purge_generation();
  if (f->target.empty()) f->target = slot;
  const std::string& key = f->target;
  // Only the stored variant this client selects may be refreshed by a 304.
  const auto* e = f->private_ ? nullptr : cache_.peek(key, f->client);
  if (e != nullptr) {
    f->selected = true;
    f->revalidating = e->meta.stored.variant;
    const size_t before = f->request_headers.size();
    if (!e->meta.origin_etag.empty()) {
      f->request_headers.push_back("If-None-Match: " + e->meta.origin_etag);
    }
    if (!e->meta.last_modified.empty()) {
      f->request_headers.push_back("If-Modified-Since: " + e->meta.last_modified);
    }
    f->conditional = f->request_headers.size() > before;
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
  cb.interim = [f](const OriginHead& h) {
    std::vector<http::Header> fields;
    for (const auto& [name, value] : h.headers) fields.push_back({name, value});
    fields = http::end_to_end(fields);
    for (auto& d : f->waiters) {
      if (auto* ex = live(d)) ex->interim(static_cast<int>(h.status), fields);
    }
  };
  cb.body = [this, f, url](const char* data, size_t n) {
    f->received += n;
    if (f->writer) {
      // The clients start streaming with the first body bytes: an answer
      // that fails before any (a bad head, no body) is still a clean 502
      // for them. They are answered before those bytes are written, and
      // send them from memory: a client's first byte never waits on the
      // disk. A body with no room on disk when its fetch began is answered
      // whole from spill memory at the end (streaming it from memory as
      // well would hold it twice).
      const bool first = !f->fill && f->have_head && f->head.status == 200 &&
                         f->writer->on_disk() && f->writer->size() == 0 && n > 0;
      if (first) start_fill(*f, std::string_view(data, n));
      const bool was_on_disk = f->writer->on_disk();
      bool held = f->writer->write(data, n);
      // That first write failed: its clients, answered already, stream the
      // body from the fill's memory. A spilled copy beside it, kept for the
      // cache, would hold the whole body twice and count only once; it is
      // passed through instead (or fails), uncached.
      if (held && first && !f->writer->on_disk()) held = false;
      if (!held) {
        if (!f->fill || f->streamed == 0 || *passing_ >= kMaxPassing) {
          f->local_error = "cannot hold the body: not on disk (" + f->writer->disk_error() +
                           "), and no spill memory or pass-through left for it";
          return false;
        }
        // Its clients are streaming it: they still get all of it, from a
        // window of memory; nothing is stored.
        spdlog::warn(
            "{}: not cached: not on disk ({}), not spilled: passed through to "
            "the {} clients streaming it",
            url, f->writer->disk_error(), f->streamed);
        f->writer->pass();
        f->fill->window(kPassWindow);
        ++*passing_;
        f->pass_slot = std::shared_ptr<void>(nullptr, [n = passing_](void*) { --*n; });
      }
      if (f->fill) {
        if (!f->writer->on_disk()) {
          // The disk failed: the file holds what came before this piece;
          // the rest reaches the streaming clients from memory (once).
          if (was_on_disk) f->fill->spill(f->writer->size() - n);
          f->fill->spilled(std::string_view(data, n));
        }
        f->fill->advance(f->writer->size(), now_ms());
      }
      // The heads are out: the cache's thread may have the CPU now.
      if (first) cache_.keep_spare();
      return true;
    }
    return true;  // no writer: no body expected (HEAD)
  };
  cb.done = [this, slot](const OriginResult& r) {
    finish_fetch(slot, r);
    cache_.keep_spare();  // once its answers are out, if it took the spare
  };
  OriginRequest request;
  request.method = f->method;
  request.url = url;
  request.headers = f->request_headers;
  request.body = std::move(f->body);
  // done() may run inside fetch() (a refused transfer) and free `f`.
  const uint64_t id = origin_.fetch(std::move(request), std::move(cb));
  if (auto again = fetches_.find(slot); again != fetches_.end() && again->second.get() == f) {
    f->transfer = id;
  }
}

void Pull::on_head(Fetch& f, const OriginHead& h) {
  f.have_head = true;
  f.head = h;
  f.head_fields.clear();
  for (const auto& [name, value] : h.headers) f.head_fields.push_back({name, value});
  cache::Stored& s = f.stored;
  s.status = static_cast<int>(h.status);
  s.headers = cache::storable_headers(f.head_fields, policy_);
  s.variant = cache::variant_key(f.head_fields, f.client).value_or("");
  s.request_time = f.request_time;
  s.response_time = now();
  if (f.method != "HEAD") {
    // Its Content-Length is reserved on disk at once (within cache_size).
    f.writer = cache_.begin(content_length(h));
    if (!f.writer) f.local_error = std::string("cannot buffer the body: ") + std::strerror(errno);
  }
}

void Pull::start_fill(Fetch& f, std::string_view first) {
  const std::optional<uint64_t> length = content_length(f.head);
  f.fill = std::make_shared<FillProgress>(length, now_ms());
  // The clients answered below send the first bytes with the head, in this
  // turn, rather than on a wake that waits behind the origin's next reads.
  const auto bytes = std::make_shared<const std::string>(first);
  const bool shared_get = f.method == "GET" && !f.private_;
  // What finish_fetch would answer with, decided now: the stored fields
  // when the answer is storable, else every end-to-end field.
  const bool storable = shared_get && cache::storable("GET", f.client, 200, f.head_fields,
                                                      policy_) == cache::Verdict::Storable;
  f.fill_fields = storable ? f.stored.headers : http::end_to_end(f.head_fields);
  f.fill_status = std::string(forwarded(f)) + "; fwd-status=200" + (storable ? "; stored" : "");
  auto obj = std::make_shared<Object>();
  obj->rel = f.target;
  obj->size = length.value_or(0);
  const std::string etag(f.head.header("ETag").value_or(""));
  if (!etag.starts_with("W/")) obj->etag = etag;
  obj->content_type = std::string(f.head.header("Content-Type").value_or(""));
  obj->last_modified = std::string(f.head.header("Last-Modified").value_or(""));
  obj->mtime = obj->last_modified.empty() ? -1 : http::parse_http_date(obj->last_modified);
  obj->in_memory = false;
  obj->hold = f.writer->hold();  // the file's blocks stay counted while it is streamed
  f.fill_object = std::move(obj);
  // The clients waiting now whose request selects this response (Vary);
  // the others wait for the end, as before.
  std::vector<Waiter> keep;
  for (size_t i = 0; i < f.waiters.size(); ++i) {
    auto* ex = live(f.waiters[i]);
    if (ex == nullptr) continue;
    const bool mine = (i == 0 && f.client_waits) ||
                      cache::variant_key(f.head_fields, ex->request().headers) == f.stored.variant;
    if (mine && can_stream(ex->request(), *f.fill)) {
      answer_fill(*ex, f, bytes);
    } else {
      keep.push_back(std::move(f.waiters[i]));
    }
  }
  f.client_waits = f.client_waits && !keep.empty() && f.waiters.size() == keep.size();
  f.waiters = std::move(keep);
}

bool Pull::join_fill(PullClient& ex, Fetch& f) {
  if (!f.fill || f.fill->view().state != FillProgress::State::Filling) return false;
  if (!f.writer->on_disk()) return false;  // spilled: no file to join; answered at the end
  if (cache::variant_key(f.head_fields, ex.request().headers) != f.stored.variant) return false;
  if (!can_stream(ex.request(), *f.fill)) return false;
  answer_fill(ex, f);
  return true;
}

void Pull::answer_fill(PullClient& ex, Fetch& f, const std::shared_ptr<const std::string>& first) {
  Answer a;
  a.object = f.fill_object;
  a.fd = ex.is_head() ? -1 : f.writer->dup_fd();
  a.status = 200;
  a.headers = f.fill_fields;
  a.cache_status = name_ + "; " + f.fill_status;
  a.fill = f.fill;
  if (!ex.is_head()) {
    a.first = first;
    ++f.streamed;
  }
  ex.respond(std::move(a));
}

std::string_view Pull::forwarded(const Fetch& f) const {
  // RFC 9211 2.2: why the request went to the origin.
  if (f.method != "GET" || f.private_) return "fwd=bypass";
  if (f.selected) return "fwd=stale";
  return cache_.holds(f.target) ? "fwd=vary-miss" : "fwd=uri-miss";
}

const DiskCache::Entry* Pull::revalidated(const Fetch& f) const {
  return f.conditional ? cache_.peek_variant(f.target, f.revalidating) : nullptr;
}

void Pull::invalidate(const Fetch& f) {
  // RFC 9111 4.4: the target, and Location / Content-Location when they are
  // on the same origin (never another site's: that would let one site purge
  // another's objects); every variant of each.
  for (const auto& key : cache::invalidation_targets(f.method, static_cast<int>(f.head.status),
                                                     f.target, f.host, f.head_fields)) {
    cache_.erase_all(key);
  }
}

std::vector<Waiter> Pull::take_other_variants(Fetch& f) {
  // A 304 answers for the stored response: its Vary and variant decide.
  const auto* stored = f.head.status == 304 ? revalidated(f) : nullptr;
  const std::vector<http::Header>& vary_from =
      stored != nullptr ? stored->meta.stored.headers : f.head_fields;
  const std::string variant = stored != nullptr ? stored->meta.stored.variant : f.stored.variant;
  std::vector<Waiter> keep, others;
  for (size_t i = 0; i < f.waiters.size(); ++i) {
    auto* ex = live(f.waiters[i]);
    if (ex == nullptr) continue;
    const bool mine = (i == 0 && f.client_waits) ||
                      cache::variant_key(vary_from, ex->request().headers) == variant;
    (mine ? keep : others).push_back(std::move(f.waiters[i]));
  }
  f.waiters = std::move(keep);
  return others;
}

void Pull::refetch(const std::string& key, std::vector<Waiter> waiters) {
  if (waiters.empty()) return;
  auto it = fetches_.find(key);
  if (it != fetches_.end()) {  // one began meanwhile: collapse onto it
    for (auto& d : waiters) it->second->waiters.push_back(std::move(d));
    return;
  }
  auto* ex = live(waiters.front());
  if (ex == nullptr) return;
  auto f = std::make_unique<Fetch>();
  f->request_headers = forwarded_fields(ex->request(), true, name_);
  f->client = ex->request().headers;
  f->client_waits = true;
  f->waiters = std::move(waiters);
  fetches_.emplace(key, std::move(f));
  start_fetch(key);
}

void Pull::answer_entry(PullClient& ex, const DiskCache::Entry& e, const std::string& status,
                        bool as_received) {
  Answer a;
  a.object = e.object;
  if (!e.object->in_memory && e.meta.size > 0 && !ex.is_head()) {
    a.fd = cache_.open(e);
    if (a.fd < 0) {
      spdlog::warn("cache body of {} vanished ({}): dropping the entry", e.meta.key,
                   std::strerror(errno));
      const std::string key = e.meta.key;
      const std::string variant = e.meta.stored.variant;
      cache_.erase(key, variant);
      ex.reply(503, "cached copy is being replaced, try again", {{"Retry-After", "1"}});
      return;
    }
  }
  a.status = e.meta.stored.status;
  a.headers = e.meta.stored.headers;
  // The clients of the fetch that brought it get the origin's Age as it
  // came: whole-second clocks would add a second of "delay" at random.
  a.age = as_received ? -1 : cache::current_age(e.meta.stored, now());
  a.cache_status = name_ + "; " + status;
  ex.respond(std::move(a));
}

void Pull::answer_error(PullClient& ex, Fetch& f, const DiskCache::Entry& e) {
  ++stats_.stale_served;
  const std::string fwd =
      f.have_head ? "; fwd-status=" + std::to_string(f.head.status) : std::string();
  answer_entry(ex, e, "fwd=stale" + fwd + "; detail=stale-if-error");
}

void Pull::finish_fetch(const std::string& slot, const OriginResult& r) {
  auto node = fetches_.extract(slot);
  if (node.empty()) return;
  Fetch& f = *node.mapped();
  const std::string key = f.target;
  const std::string url = url_for(key);
  const long status = f.have_head ? f.head.status : 0;
  const bool shared_get = f.method == "GET" && !f.private_;

  std::string failure;  // non-empty: the origin failed us
  int error_status = 502;
  if (!f.local_error.empty()) {
    failure = f.local_error;
    error_status = 503;
  } else if (r.error == OriginError::Timeout) {
    failure = "origin timed out: " + r.message;
    error_status = 504;
  } else if (r.error == OriginError::Malformed) {
    failure = "origin sent a malformed response: " + r.message;
  } else if (r.error != OriginError::None) {
    failure = "origin unreachable: " + r.message;
  } else if (status == 304 && shared_get && revalidated(f) == nullptr) {
    failure = "origin answered 304 to a request that was not conditional";
  }
  if (failure.empty() && f.writer) {
    f.writer->finish();
    if (auto rd = f.head.header("Repr-Digest")) {
      const std::string want = digest::sha256_from_repr_digest(*rd);
      if (!want.empty() && want != f.writer->digest()) {
        failure = "origin body does not match its Repr-Digest (" + want + ")";
      }
    }
  }
  // A 5xx is relayed as the origin sent it, unless stale-if-error lets a
  // stored copy answer instead (RFC 5861 4).
  if (failure.empty() && status >= 500 && shared_get) {
    const auto* e = cache_.peek(key, f.client);
    if (e != nullptr && cache::usable_on_error(e->meta.stored, policy_, now())) {
      failure = "origin answered " + std::to_string(status);
    }
  }

  if (f.fill) {
    // The clients streaming it end with the fetch: whole, or cut.
    if (failure.empty()) {
      f.fill->finish();
    } else {
      f.fill->fail();
    }
  }
  if (!failure.empty()) {
    ++stats_.origin_errors;
    spdlog::warn("{}: {}", url, failure);
    // RFC 9111 4.2.4: cut off from the origin, a stale copy may answer
    // unless it forbids that; an origin's error answer is stale-if-error's.
    const bool disconnected =
        r.error == OriginError::Unreachable || r.error == OriginError::Timeout;
    for (auto& d : f.waiters) {
      auto* ex = live(d);
      if (ex == nullptr) continue;
      const auto* e = f.private_ ? nullptr : cache_.find(key, ex->request().headers);
      if (e != nullptr &&
          (disconnected ? cache::usable_when_disconnected(e->meta.stored, policy_, now())
                        : cache::usable_on_error(e->meta.stored, policy_, now()))) {
        answer_error(*ex, f, *e);
      } else {
        // The reason phrase only: `failure` names the origin's URL and the
        // library's error text, which are the operators' (logged above).
        ex->reply(error_status, http::reason_phrase(error_status), {{"Cache-Control", "no-store"}});
      }
    }
    const bool have_copy = cache_.peek(key, f.client) != nullptr;
    for (auto& p : f.prefetchers) p(have_copy, failure);
    return;
  }
  if (status >= 500) ++stats_.origin_errors;

  invalidate(f);
  // Collapsed clients whose request selects another variant than this
  // response's (RFC 9111 4.1) get a fetch of their own once this one is done.
  struct Later {
    Pull* pull;
    std::string key;
    std::vector<Waiter> waiters;
    ~Later() { pull->refetch(key, std::move(waiters)); }
  } later{this, key, f.private_ ? std::vector<Waiter>{} : take_other_variants(f)};

  if (status == 304 && shared_get) {
    const auto* old = revalidated(f);
    const std::string variant = old->meta.stored.variant;
    if (!cache::not_modified_applies(old->meta.stored.headers, f.head_fields)) {
      // RFC 9111 4.3.4: the origin means another representation than ours.
      cache_.erase(key, variant);
      ++stats_.origin_errors;
      spdlog::warn("{}: 304 with validators of another representation: copy dropped", url);
      for (auto& d : f.waiters) {
        if (auto* ex = live(d)) {
          ex->reply(502, "origin answered 304 for another representation\n",
                    {{"Cache-Control", "no-store"}});
        }
      }
      for (auto& p : f.prefetchers) p(false, "304 for another representation");
      return;
    }
    cache_.refresh(key, cache::refreshed(old->meta.stored, f.head_fields, f.request_time, now()));
    ++stats_.revalidated;
    spdlog::debug("{}: 304, copy refreshed", url);
    for (auto& d : f.waiters) {
      const auto* cur = cache_.peek_variant(key, variant);
      if (auto* ex = live(d); ex != nullptr && cur != nullptr) {
        answer_entry(*ex, *cur, "fwd=stale; fwd-status=304");
      }
    }
    for (auto& p : f.prefetchers) p(true, {});
    return;
  }

  EntryMeta meta;
  meta.key = key;
  meta.stored = f.stored;
  meta.origin_etag = std::string(f.head.header("ETag").value_or(""));
  if (!meta.origin_etag.empty() && !meta.origin_etag.starts_with("W/")) {
    meta.etag = meta.origin_etag;  // strong: the same validator on every tier
  }
  meta.last_modified = std::string(f.head.header("Last-Modified").value_or(""));
  meta.content_type = std::string(f.head.header("Content-Type").value_or(""));
  const std::string fwd_status =
      std::string(forwarded(f)) + "; fwd-status=" + std::to_string(status);
  if (!shared_get) {
    // Not stored, and the shared copy (if any) is another answer: kept.
  } else if (f.writer &&
             cache::storable("GET", f.client, static_cast<int>(status), f.head_fields, policy_) ==
                 cache::Verdict::Storable &&
             // Fetched (maybe) before a purge that names it: served, not kept.
             !cache_.purged_since(f.purge_generation, key, f.stored, now_ms())) {
    if (cache_.commit(*f.writer, meta) != nullptr) {
      for (auto& d : f.waiters) {
        const auto* cur = cache_.peek_variant(key, meta.stored.variant);
        if (auto* ex = live(d); ex != nullptr && cur != nullptr) {
          answer_entry(*ex, *cur, fwd_status + "; stored", /*as_received=*/true);
        }
      }
      for (auto& p : f.prefetchers) p(true, {});
      return;
    }
    if (!f.writer->passing()) {  // which said so when it began
      spdlog::warn("{}: not cached: {}", url,
                   f.writer->on_disk() ? std::strerror(errno)
                                       : "not on disk (" + f.writer->disk_error() + ")");
    }
  } else if (const auto* old = cache_.peek(key, f.client)) {
    // The origin's latest answer replaces what this request selected.
    const std::string variant = old->meta.stored.variant;
    cache_.erase(key, variant);
  }
  // Served from the fetched bytes, not stored: every end-to-end field relayed
  // (also those that private="..." keeps out of the cache).
  const std::vector<http::Header> relayed = http::end_to_end(f.head_fields);
  std::shared_ptr<Object> obj = f.writer ? f.writer->object() : std::make_shared<Object>();
  obj->rel = key;
  if (f.writer) {
    obj->etag = meta.etag.empty() ? DiskCache::etag_of(f.writer->digest_hex()) : meta.etag;
  } else {
    obj->in_memory = true;
  }
  obj->content_type = meta.content_type;
  const int64_t lm = meta.last_modified.empty() ? -1 : http::parse_http_date(meta.last_modified);
  obj->mtime = lm;
  obj->last_modified = meta.last_modified;
  for (auto& d : f.waiters) {
    auto* ex = live(d);
    if (ex == nullptr) continue;
    if (f.writer && f.writer->passing() && !ex->is_head()) {
      // Passed through to the clients streaming it, kept nowhere: those
      // that could not stream it ask again.
      ex->reply(503, http::reason_phrase(503),
                {{"Retry-After", "1"}, {"Cache-Control", "no-store"}});
      continue;
    }
    Answer a;
    a.object = obj;
    if (!obj->in_memory && !ex->is_head()) a.fd = f.writer->dup_fd();
    a.status = static_cast<int>(status);
    a.headers = relayed;
    a.cache_status = name_ + "; " + fwd_status;
    ex->respond(std::move(a));
  }
  if (status != 200) spdlog::info("{}: origin answered {}", url, status);
  for (auto& p : f.prefetchers) p(true, {});
}

}  // namespace cdn::replica
