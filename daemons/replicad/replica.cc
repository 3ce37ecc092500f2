// SPDX-License-Identifier: MIT
#include "daemons/replicad/replica.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <optional>

#include <nlohmann/json.hpp>

#include "cdn_config.h"
#include "common/http/mime.hpp"
#include "common/http/path.hpp"
#include "common/http/serialize.hpp"
#include "common/metrics/process.hpp"
#include "common/metrics/prometheus.hpp"
#include "common/purge/purge.hpp"
#include "common/text/text.hpp"
#include "common/uv/handle.hpp"
#include "daemons/lifecycle.hpp"
#include "daemons/replicad/fill_stream.hpp"
#include "daemons/replicad/range.hpp"

namespace cdn::replica {

// Generated from dashboard.html by daemons/embed_page.py (meson.build).
extern const daemon::Page kDashboard;

namespace {

// If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/ is ignored.
bool etag_matches(std::string_view header, std::string_view etag) {
  auto strip_weak = [](std::string_view t) {
    if (t.size() >= 2 && t[0] == 'W' && t[1] == '/') t.remove_prefix(2);
    return t;
  };
  etag = strip_weak(etag);
  size_t pos = 0;
  while (pos <= header.size()) {
    size_t comma = header.find(',', pos);
    if (comma == std::string_view::npos) comma = header.size();
    const std::string_view item = text::trim_ows(header.substr(pos, comma - pos));
    if (item == "*" || strip_weak(item) == etag) return true;
    pos = comma + 1;
  }
  return false;
}

constexpr std::chrono::milliseconds kRevalidateAfter{100};

// An unreadable types_file is not fatal: every file is still served, with the
// built-in types, and the warning names the file.
void use_mime_types(const config::ContentSettings& c) {
  if (c.types_file.empty()) {
    http::install_mime_types(nullptr);
    spdlog::info("content types: the built-in table ([content] types_file is empty)");
    return;
  }
  std::string error;
  auto table = http::load_mime_types(c.types_file, &error);
  if (error.empty()) {
    spdlog::info("content types: {} extensions from {}", table->size(), c.types_file);
  } else {
    spdlog::warn("[content] types_file: {}; using the built-in table", error);
  }
  http::install_mime_types(std::move(table));
}

}  // namespace

std::unique_ptr<Store> open_store(const config::ContentSettings& c) {
  std::unique_ptr<Store> store;
  if (!c.root.empty()) store = Store::open_root(c.root, c.index);
  if (c.root.empty() && !c.page.empty()) store = Store::open_page(c.page);
  if (!store) return store;
  // Files held in memory are checked against the disk at most every 100 ms
  // rather than on every request (why this figure: store.hpp).
  store->set_revalidate_after(kRevalidateAfter);
  // The same bound as an origin's memory tier: local files are content too.
  store->set_memory_budget(c.cache_memory);
  return store;
}

net::ServerOptions Replica::options() {
  auto o = daemon::server_options(settings_.server, "cdn-replicad/" CDN_VERSION);
  o.on_complete = [this](const net::RequestRecord& r) {
    // A request for no site of this replica (421) is counted under none.
    const Site* site = site_for(r.request);
    requests_.record(r, site != nullptr ? std::string_view(site->name) : std::string_view());
  };
  o.group = connections_;
  return o;
}

Replica::Replica(uv_loop_t* loop, config::ReplicaSettings settings, std::unique_ptr<Store> store,
                 const daemon::RequestLog::Prepared* log,
                 std::shared_ptr<net::ServerGroup> connections, const Replica* sites_of,
                 std::shared_ptr<daemon::TlsCertificates> tls)
    : loop_(loop),
      settings_(std::move(settings)),
      connections_(std::move(connections)),
      tls_(std::move(tls)),
      admin_(daemon::AdminGate::from(settings_.admin)),
      server_(loop, options(), [this](net::Exchange& ex) { handle(ex); }),
      started_(std::chrono::steady_clock::now()),
      rate_last_time_(started_),
      watches_(loop,
               [this] {
                 sample_rate();
                 return status::encode(status());
               }),
      inbox_(daemon::Inbox::make(loop)) {
  if (log != nullptr) {
    requests_.apply(*log);
  } else {
    requests_.configure(settings_.log);
  }
  if (sites_of != nullptr) {
    pull_home_ = sites_of->inbox_;
    adopt_sites(*sites_of);
  } else {
    build_sites(open_sites(settings_, std::move(store)));
  }
}

Site* Replica::site_for(const http::Request& req) const {
  // One site (no host names): no Host to look for, twice a request.
  const auto i = site_map_.size() == 0 ? site_map_.default_site()
                                       : site_map_.find(req.header("Host").value_or(""));
  return i ? sites_[*i].get() : nullptr;
}

void Replica::adopt_sites(const Replica& first) {
  // Called on this worker's loop while `first` is between reloads: its
  // sites are whole. Stores lock; a Pull is only ever called on the main
  // loop (serve_content, serve_purge post there).
  sites_ = first.sites_;
  site_map_ = first.site_map_;
}

std::shared_ptr<Site> Replica::kept_site(const SiteSpec& spec, bool new_default_store) const {
  const bool is_default = spec.name == config::kDefaultSite;
  if (is_default && new_default_store) return nullptr;
  for (const auto& old : sites_) {
    if (old->name == spec.name && old->same_source(spec.content)) return old;
  }
  return nullptr;
}

Replica::OpenedSites Replica::open_sites(const config::ReplicaSettings& s,
                                         std::unique_ptr<Store> store) {
  OpenedSites out;
  out.specs = site_specs(s);
  const bool new_default_store = store != nullptr;
  const std::string& server_name = s.server.name.empty() ? settings_.server.name : s.server.name;
  try {
    for (const auto& spec : out.specs) {
      const bool is_default = spec.name == config::kDefaultSite;
      if (kept_site(spec, new_default_store)) {
        out.fresh.push_back(nullptr);
        continue;
      }
      try {
        out.fresh.push_back(open_site(loop_, spec.name, spec.hosts, spec.content,
                                      is_default ? std::move(store) : nullptr, server_name));
      } catch (const std::exception& e) {
        if (is_default) throw;  // [content]: its own message, as at start-up
        throw std::runtime_error("site " + spec.name + ": " + e.what());
      }
    }
  } catch (...) {
    discard(std::move(out));
    throw;
  }
  return out;
}

void Replica::discard(OpenedSites opened) {
  for (auto& site : opened.fresh) {
    // Its fetches have not begun, but its origin client holds loop handles,
    // which close with the loop's help: kept until exit like a replaced site.
    if (!site || !site->pull) continue;
    site->pull->close();
    retired_.push_back(std::move(site));
  }
}

void Replica::build_sites(OpenedSites opened) {
  std::vector<std::shared_ptr<Site>> next;
  config::SiteMap map;
  const bool new_default_store =
      std::any_of(opened.fresh.begin(), opened.fresh.end(),
                  [](const auto& s) { return s && s->name == config::kDefaultSite && s->store; });
  for (size_t i = 0; i < opened.specs.size(); ++i) {
    SiteSpec& spec = opened.specs[i];
    const bool is_default = spec.name == config::kDefaultSite;
    std::shared_ptr<Site> site = std::move(opened.fresh[i]);
    if (site) {
      if (!sites_.empty()) spdlog::info("site {}: {}", site->name, site->source());
    } else if ((site = kept_site(spec, new_default_store))) {
      // Other workers may be reading the old Site: a new one, with the
      // same store (and its memory tier) or the same pull (and its cache).
      if (site->pull) {
        site->pull->reconfigure(spec.content);
      } else {
        site->store->set_memory_budget(spec.content.cache_memory);
      }
      auto renewed = std::make_shared<Site>();
      renewed->name = site->name;
      renewed->hosts = std::move(spec.hosts);
      renewed->content = spec.content;
      renewed->store = site->store;
      renewed->pull = site->pull;
      renewed->cache_control = cache_control_of(spec.content);
      site = std::move(renewed);
    }
    const size_t index = next.size();
    if (is_default) map.set_default(index);
    for (const auto& h : site->hosts) map.add(h, index);
    next.push_back(std::move(site));
  }
  for (auto& old : sites_) {
    if (std::find(next.begin(), next.end(), old) != next.end()) continue;
    if (old->pull && std::any_of(next.begin(), next.end(),
                                 [&](const auto& n) { return n->pull == old->pull; })) {
      continue;  // renewed: its pull goes on
    }
    // Fetches of a site that is gone end now; the object stays until exit,
    // as exchanges and fetch callbacks may still hold on to it. A store's
    // users hold it by shared_ptr (thread-pool work) or only for a call.
    if (!old->pull) continue;
    old->pull->close();
    retired_.push_back(std::move(old));
  }
  sites_ = std::move(next);
  site_map_ = std::move(map);
}

bool Replica::prefetch_start_page(std::string& why, const std::function<bool()>& give_up) {
  for (const auto& site : sites_) {
    if (!site->pull) continue;
    if (!prefetch_start_page(*site, why, give_up)) {
      if (sites_.size() > 1) why = fmt::format("site {}: {}", site->name, why);
      return false;
    }
  }
  return true;
}

bool Replica::prefetch_start_page(Site& site, std::string& why,
                                  const std::function<bool()>& give_up) {
  // Shared with the callback, which may come after a give-up returned.
  struct Outcome {
    bool done = false, ok = false;
    std::string why;
  };
  auto out = std::make_shared<Outcome>();
  site.pull->prefetch("/", [out](bool good, std::string message) {
    out->done = true;
    out->ok = good;
    out->why = std::move(message);
  });
  while (!out->done) {
    if (give_up && give_up()) {
      why = "start-up stopped";
      return false;
    }
    uv_run(loop_, UV_RUN_ONCE);
  }
  why = out->why;
  if (out->ok && !why.empty()) {
    spdlog::warn("site {}: origin failed ({}): starting with the cached copy", site.name, why);
  }
  return out->ok;
}

daemon::Listening Replica::start(uint32_t workers) {
  auto where = daemon::start_listening(server_, settings_.server, workers, settings_.tls, tls_);
  if (settings_.server.name.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    settings_.server.name = std::string(host) + ":" + std::to_string(where.port);
  }
  for (const auto& site : sites_) {
    if (site->pull) site->pull->set_name(settings_.server.name);
  }
  state_ = status::State::Serving;
  spdlog::info("replica {} serving {} on {}, {} worker(s)", settings_.server.name, sources(),
               where.where, workers);
  return where;
}

void Replica::start_worker(const daemon::Listening& where) {
  daemon::join_listening(server_, settings_.server, where, settings_.tls, tls_);
  state_ = status::State::Serving;
}

void Replica::reconfigure(config::ReplicaSettings settings, OpenedSites sites,
                          const daemon::ObserverReload& observers, const Replica* sites_of) {
  if (settings.server.name.empty()) settings.server.name = settings_.server.name;
  settings.server.address = settings_.server.address;
  settings.server.port = settings_.server.port;
  settings.server.workers = settings_.server.workers;
  settings.tls.port = settings_.tls.port;  // read at start only
  settings.tls.address = settings_.tls.address;
  requests_.apply(observers.log);
  admin_ = observers.admin;
  settings_.server = settings.server;
  server_.set_options(options());
  settings_ = std::move(settings);
  if (sites_of != nullptr) {
    adopt_sites(*sites_of);
    return;
  }
  for (const auto& site : sites.fresh) {
    if (site && site->store && site->name == config::kDefaultSite) {
      spdlog::info("content source now {}", site->store->source());
    }
  }
  build_sites(std::move(sites));
}

std::vector<const Replica*> Replica::members() const {
  if (group_ == nullptr) return {this};
  std::vector<const Replica*> all;
  for (const auto& r : *group_) all.push_back(r.get());
  return all;
}

void Replica::drain(std::function<void()> done) {
  state_ = status::State::Draining;
  // Watching balancers hear it now, not at their next turn; the streams end
  // so that the drain can finish.
  watches_.end_all();
  server_.drain(std::move(done));
}

void Replica::stop() {
  watches_.clear();
  inbox_->close();
  server_.close();
  if (pull_home_) return;  // the sites are worker 0's, closed there
  for (const auto& site : sites_) {
    if (site->pull) site->pull->close();
  }
}

std::string Replica::sources() const {
  std::string out;
  for (const auto& site : sites_) {
    if (!out.empty()) out += ", ";
    if (sites_.size() > 1) out += site->name + "=";
    out += site->source();
  }
  return out;
}

namespace {
std::vector<const net::Server*> servers_of(const std::vector<const Replica*>& rs) {
  std::vector<const net::Server*> v;
  v.reserve(rs.size());
  for (const Replica* r : rs) v.push_back(&r->server());
  return v;
}
}  // namespace

void Replica::sample_rate() {
  const auto now = std::chrono::steady_clock::now();
  const double secs = std::chrono::duration<double>(now - rate_last_time_).count();
  if (secs < 0.5) return;
  // Every worker's figures: each worker samples the sum on its own.
  const auto st = daemon::add_up(servers_of(members()));
  bytes_per_second_ = static_cast<double>(st.bytes_sent - rate_last_bytes_) / secs;
  requests_per_second_ = static_cast<double>(st.requests_total - rate_last_requests_) / secs;
  rate_last_bytes_ = st.bytes_sent;
  rate_last_requests_ = st.requests_total;
  rate_last_time_ = now;
}

std::string Replica::status_line() {
  sample_rate();
  const auto st = daemon::add_up(servers_of(members()));
  return fmt::format("{}: {} connections, {:.0f} req/s, {:.1f} MB/s, {} requests served",
                     status::to_string(state_), st.active_connections.get(), requests_per_second_,
                     bytes_per_second_ / 1e6, st.requests_total.get());
}

status::ReplicaStatus Replica::status(bool in_request) const {
  const auto group = members();
  const auto st = daemon::add_up(servers_of(group));
  status::ReplicaStatus s;
  s.name = settings_.server.name;
  s.source = sources();
  for (const auto& site : sites_) {
    s.sites += (s.sites.empty() ? "" : " ") + site->name;
    for (const auto& h : site->hosts) {
      s.hosts += (s.hosts.empty() ? "" : " ") + h;
      s.host_sites += (s.host_sites.empty() ? "" : " ") + h + "=" + site->name;
    }
    if (!site->pull) continue;
    const auto& ps = site->pull->stats();
    s.cache_hits += ps.hits;
    s.cache_misses += ps.misses;
    s.cache_bytes += site->pull->cache().bytes();
    s.cache_objects += site->pull->cache().objects();
    s.origin_requests_total += ps.origin_requests;
    s.origin_errors_total += ps.origin_errors;
  }
  s.cache_hit_ratio =
      s.cache_hits + s.cache_misses > 0
          ? static_cast<double>(s.cache_hits) / static_cast<double>(s.cache_hits + s.cache_misses)
          : 0;
  s.state = state_;
  s.active_connections = st.active_connections;
  s.capacity = settings_.content.capacity;
  s.requests_total = st.requests_total;
  s.bytes_total = st.bytes_sent;
  s.bytes_per_second = bytes_per_second_;
  // This worker's status streams are not load; other workers' (a few
  // balancers' connections at most) count as any connection.
  const uint64_t own = watches_.size() + (in_request ? 1 : 0);
  const uint64_t busy = st.active_connections > own ? st.active_connections - own : 0;
  s.load = s.capacity > 0 ? static_cast<double>(busy) / static_cast<double>(s.capacity) : 0;
  s.uptime_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  s.version = CDN_VERSION;
  return s;
}

void Replica::handle(net::Exchange& ex) {
  Site* site = site_for(ex.request());
  if (ex.request().method == "PURGE") {
    serve_purge(ex, site);
    return;
  }
  const auto path = daemon::accept_request(ex, site != nullptr && site->pull != nullptr);
  if (!path) return;
  if (path->starts_with("/.cdn/")) {
    // Every endpoint that is not content is the operators' (observe.hpp).
    if (!admin_.admit(ex)) return;
    if (ex.request().method != "GET" && !ex.is_head()) {
      ex.reply(405, "only GET and HEAD are served", {{"Allow", "GET, HEAD"}});
      return;
    }
    if (*path == "/.cdn/status") {
      serve_status(ex);
    } else if (*path == "/.cdn/dashboard") {
      daemon::send_page(ex, kDashboard);
    } else if (*path == "/.cdn/metrics") {
      serve_metrics(ex);
    } else {
      ex.reply(404, "no such CDN endpoint");
    }
    return;
  }
  if (site == nullptr) {
    misdirected(ex);
    return;
  }
  serve_content(ex, *site, *path);
}

void Replica::misdirected(net::Exchange& ex) {
  // RFC 9110 15.5.20: this server is not configured for the request's host;
  // a client may try another connection.
  ex.reply(421, "no site here for this host");
}

void Replica::serve_purge(net::Exchange& ex, Site* site) {
  const auto r = admin_.admit_purge(ex);
  if (!r) return;
  if (site == nullptr) {
    misdirected(ex);
    return;
  }
  if (site->pull && pull_home_) {
    // The cache is the main loop's: purged there, answered here.
    auto d = ex.defer();
    auto done = [this, d, r = *r, name = site->name](size_t n) {
      if (auto* later = d.exchange()) purged(*later, r, name, n, true);
    };
    pull_home_->post([site = site->shared_from_this(), r = *r, home = inbox_, done] {
      const size_t n = site->pull->purge(r);
      home->post([done, n] { done(n); });
    });
    return;
  }
  // Local content (root, page) is read from its files, which are the truth:
  // there is no copy to purge.
  purged(ex, *r, site->name, site->pull ? site->pull->purge(*r) : 0, site->pull != nullptr);
}

void Replica::purged(net::Exchange& ex, const purge::Request& r, const std::string& site, size_t n,
                     bool cached) {
  ++purges_total_;
  purged_objects_total_ += n;
  spdlog::info("purge {}{} of site {}: {} objects", purge::describe(r),
               r.id.empty() ? "" : " id " + r.id, site, n);
  nlohmann::json doc;
  doc["site"] = site;
  doc["purge"] = purge::describe(r);
  doc["scope"] = std::string(purge::to_string(r.scope));
  doc["soft"] = r.soft;
  doc["purged"] = n;
  doc["cached"] = cached;
  if (!r.id.empty()) doc["id"] = r.id;
  daemon::send_document(ex, "application/json", doc.dump() + "\n");
}

void Replica::serve_content(net::Exchange& ex, Site& site, const std::string& path) {
  if (site.pull) {
    auto client = std::make_shared<PullClient>(
        ex, [this](net::Exchange& e, const Answer& a) { answer_pulled(e, a); },
        pull_home_ ? inbox_ : nullptr, site.pull->departures(pull_home_));
    if (!pull_home_) {
      site.pull->serve(client, path);
    } else if (!pull_home_->post(
                   [s = site.shared_from_this(), client, path] { s->pull->serve(client, path); })) {
      ex.reply(503, "stopping", {{"Retry-After", "1"}});
    }
    return;
  }
  Lookup found = site.store->lookup(path, /*may_load=*/false);
  if (std::holds_alternative<NeedsLoad>(found)) {
    load_then_serve(ex, site, path);
    return;
  }
  serve_lookup(ex, site, path, std::move(found));
}

namespace {
// One first-time read + digest on libuv's thread pool: a 100 MiB file takes
// a noticeable fraction of a second to hash, and the loop keeps serving others.
struct LoadWork {
  uv_work_t req{};
  Replica* replica = nullptr;
  std::shared_ptr<Site> site;
  std::string path;
  net::Deferred deferred;
  Lookup result = NotFound{};
};
}  // namespace

void Replica::load_then_serve(net::Exchange& ex, Site& site, const std::string& path) {
  auto* w = new LoadWork();
  w->replica = this;
  w->site = site.shared_from_this();
  w->path = path;
  w->deferred = ex.defer();
  w->req.data = w;
  const int rc = uv_queue_work(
      loop_, &w->req,
      [](uv_work_t* req) noexcept {
        auto* work = static_cast<LoadWork*>(req->data);
        // On libuv's pool thread: a failure (out of memory) is a 503, not a crash.
        if (!uv::guarded("lookup",
                         [work] { work->result = work->site->store->lookup(work->path); })) {
          uv::guarded("lookup", [work] { work->result = Unavailable{ENOMEM}; });
        }
      },
      [](uv_work_t* req, int) noexcept {
        std::unique_ptr<LoadWork> work(static_cast<LoadWork*>(req->data));
        net::Exchange* e = work->deferred.exchange();
        if (e == nullptr) return;  // the client went away meanwhile
        // No exception may cross libuv's callback.
        if (uv::guarded("lookup", [&] {
              work->replica->serve_lookup(*e, *work->site, work->path, std::move(work->result));
            })) {
          return;
        }
        uv::guarded("lookup", [&] {
          if (auto* again = work->deferred.exchange()) again->reply(500, "internal error");
        });
      });
  if (rc != 0) {
    delete w;
    serve_lookup(ex, site, path, site.store->lookup(path));
  }
}

void Replica::serve_lookup(net::Exchange& ex, Site& site, const std::string& path, Lookup found) {
  const auto& req = ex.request();
  if (std::holds_alternative<RedirectSlash>(found)) {
    std::string location = http::encode_path(std::get<RedirectSlash>(found).location);
    const auto query = http::query_of(req.target);
    if (!query.empty()) {
      location.push_back('?');
      http::append_encoded_query(location, query);
    }
    ex.reply(301, "moved", {{"Location", location}});
    return;
  }
  if (const auto* u = std::get_if<Unavailable>(&found)) {
    unavailable(path, u->err);
    ex.reply(503, "cannot open the content now, try again", {{"Retry-After", "1"}});
    return;
  }
  if (!std::holds_alternative<Found>(found)) {
    ex.reply(404, "not found");
    return;
  }
  auto obj = std::get<Found>(found).object;
  answer(ex, obj, site.cache_control,
         [this, &site, &obj, &path]() {
           const int fd = site.store->open(*obj);
           if (fd >= 0) {
             available();
           } else if (errno == ESTALE || errno == ENOENT) {
             spdlog::info("{}: changed on disk while being served ({}), try again", path,
                          std::strerror(errno));
           } else {
             unavailable(path, errno);
           }
           return fd;
         },
         -1, {});
}

void Replica::unavailable(const std::string& path, int err) {
  ++unavailable_total_;
  const auto said = open_failures_.failed(std::chrono::steady_clock::now());
  if (said.first) {
    spdlog::warn(
        "{}: cannot open ({}): answering 503 until files can be opened again "
        "(further failures are counted, not logged one by one)",
        path, std::strerror(err));
  } else if (said.repeated > 0) {
    spdlog::warn("still cannot open files: {} more requests answered 503 (last {}: {})",
                 said.repeated, path, std::strerror(err));
  }
}

void Replica::end_unavailable() {
  if (const auto missed = open_failures_.succeeded(std::chrono::steady_clock::now())) {
    spdlog::info("files open again ({} more requests had been answered 503 since the last line)",
                 *missed);
  }
}

void Replica::answer_pulled(net::Exchange& ex, const Answer& a) {
  int fd = a.fd;
  answer(
      ex, a.object, {}, [&fd]() { return std::exchange(fd, -1); }, a.age, a.cache_status, &a);
  if (fd >= 0) ::close(fd);
}

namespace {
std::optional<std::string_view> field_of(http::Fields fields, std::string_view name) {
  for (const auto& [k, v] : fields) {
    if (http::iequals(k, name)) return std::string_view(v);
  }
  return std::nullopt;
}
}  // namespace

void Replica::relay_fields(http::HeadWriter& h, const Answer& a, int64_t age,
                           std::initializer_list<std::string_view> skip) {
  const http::Fields fields = a.headers;
  std::string via;
  for (const auto& [k, v] : fields) {
    // Framing is each hop's own; Age is ours, computed.
    if (http::iequals(k, "Content-Length") || (age >= 0 && http::iequals(k, "Age"))) continue;
    if (http::iequals(k, "Via")) {
      via.append(v).append(", ");
      continue;
    }
    if (std::any_of(skip.begin(), skip.end(),
                    [&key = k](std::string_view n) { return http::iequals(key, n); })) {
      continue;
    }
    h.header(k, v);
  }
  // RFC 9110 6.6.1: a recipient with a clock adds the Date an origin left out.
  if (!field_of(fields, "Date")) h.header("Date", http::http_date(std::time(nullptr)));
  h.header("Via", via + "1.1 " + settings_.server.name);
  if (age >= 0) h.header("Age", static_cast<uint64_t>(age));
}

template <typename OpenFd>
void Replica::answer(net::Exchange& ex, const std::shared_ptr<const Object>& obj,
                     const std::string& cc, OpenFd&& open_fd, int64_t age,
                     const std::string& cache_status, const Answer* relay) {
  const auto& req = ex.request();
  const int origin_status = relay != nullptr ? relay->status : 200;
  // A body still coming from the origin (read-while-writer): its size is
  // known only when the origin sent a Content-Length; without one it goes
  // chunked, and a Range is ignored (RFC 9110 14.2 allows that).
  const bool filling = relay != nullptr && relay->fill != nullptr;
  const bool sized = !filling || relay->fill->view().length.has_value();
  const http::Fields fields = relay != nullptr ? relay->headers : http::Fields{};
  // The validators the client saw: an origin's own when it sent them.
  const std::string_view etag = field_of(fields, "ETag").value_or(obj->etag);
  const std::string_view last_modified = relay != nullptr
                                             ? field_of(fields, "Last-Modified").value_or("")
                                             : std::string_view(obj->last_modified);
  // Conditional requests: If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
  // Only a 200 (a selected representation) is compared.
  bool not_modified = false;
  if (origin_status != 200) {
    // relayed as it is
  } else if (auto inm = req.header("If-None-Match")) {
    not_modified = etag_matches(*inm, etag);
  } else if (auto ims = req.header("If-Modified-Since"); ims && !last_modified.empty()) {
    const int64_t t = http::parse_http_date(*ims);
    const int64_t lm = http::parse_http_date(last_modified);
    not_modified = t >= 0 && lm >= 0 && lm <= t;
  }
  // The access log's cache field: Cache-Status's parameters without our
  // own name ("hit", "fwd=miss", ...), or "local" for a directory or page.
  if (cache_status.empty()) {
    ex.note_cache("local");
  } else {
    const size_t semi = cache_status.find("; ");
    ex.note_cache(semi == std::string::npos ? std::string_view(cache_status)
                                            : std::string_view(cache_status).substr(semi + 2));
  }
  if (not_modified && relay != nullptr) {
    auto& h = ex.begin(304, /*relayed=*/true);
    relay_fields(h, *relay, age,
                 {"Content-Type", "Content-Encoding", "Content-Language", "Content-Range",
                  "Cache-Status", "CDN-Replica"});
    if (!field_of(fields, "ETag")) h.header("ETag", etag);
    if (!cache_status.empty()) h.header("Cache-Status", cache_status);
    h.header("CDN-Replica", settings_.server.name);
    ex.finish();
    return;
  }
  if (not_modified) {
    auto& h = ex.begin(304);
    h.header("ETag", obj->etag);
    h.header("Last-Modified", obj->last_modified);
    h.header("Cache-Control", cc);
    if (age >= 0) h.header("Age", static_cast<uint64_t>(age));
    if (!cache_status.empty()) h.header("Cache-Status", cache_status);
    h.header("CDN-Replica", settings_.server.name);
    ex.finish();
    return;
  }

  RangeResult range;
  if (auto r = req.header("Range"); r && origin_status == 200 && sized) {
    bool use_range = true;
    if (auto if_range = req.header("If-Range")) {
      // Only a strong validator that still matches may resume (RFC 9110 13.1.5).
      use_range = (*if_range == etag && !etag.starts_with("W/")) ||
                  (!last_modified.empty() && *if_range == last_modified);
    }
    if (use_range) range = parse_range(*r, obj->size);
  }
  if (range.kind == RangeKind::Unsatisfiable) {
    ex.reply(416, "range not satisfiable",
             {{"Content-Range", "bytes */" + std::to_string(obj->size)}});
    return;
  }
  uint64_t offset = 0, length = obj->size;
  int status = origin_status;
  if (range.kind == RangeKind::Satisfiable) {
    status = 206;
    offset = range.range.offset;
    length = range.range.length;
  }

  int fd = -1;
  // A fill with no room on disk streams from memory only: no file to open.
  const bool from_file = !filling || relay->fill->view().file_end > 0;
  if (!obj->in_memory && (length > 0 || filling) && !ex.is_head() && from_file) {
    fd = open_fd();
    if (fd < 0) {
      // Changed or removed since the lookup (answer from a fresh lookup rather
      // than send bytes that do not match the digest we would announce), or no
      // descriptor to be had now: either way it is there, and will be soon.
      ex.reply(503, "cannot open the content now, try again", {{"Retry-After", "1"}});
      return;
    }
  }

  if (relay != nullptr) {
    auto& h = ex.begin(status, /*relayed=*/true);
    // A range cut here has our Content-Range; any other answer keeps the
    // origin's (a 206 passed through, or one stored with a 200, RFC 9111 3.1).
    const bool ranged = status == 206 && origin_status == 200;
    if (ranged) {
      relay_fields(h, *relay, age,
                   {"Content-Range", "Accept-Ranges", "Cache-Status", "CDN-Replica"});
    } else {
      relay_fields(h, *relay, age, {"Accept-Ranges", "Cache-Status", "CDN-Replica"});
    }
    // RFC 9110 8.6: no length in a 204 or 1xx; a 304 passed through keeps none either.
    if (status != 204 && status != 304 && status >= 200 && sized) {
      h.header("Content-Length", length);
    }
    if (ranged) {
      h.header("Content-Range", "bytes " + std::to_string(offset) + "-" +
                                    std::to_string(offset + length - 1) + "/" +
                                    std::to_string(obj->size));
    }
    // Validators and digest of the whole representation: not of a partial
    // body the origin sent.
    if (origin_status == 200) {
      if (!field_of(fields, "ETag") && !obj->etag.empty()) h.header("ETag", obj->etag);
      if (!field_of(fields, "Repr-Digest") && !obj->digest.empty()) {
        h.header("Repr-Digest", obj->digest);
      }
      h.header("Accept-Ranges", "bytes");
    }
    if (!cache_status.empty()) h.header("Cache-Status", cache_status);
    h.header("CDN-Replica", settings_.server.name);
  } else {
    auto& h = ex.begin(status);
    h.header("Content-Type", obj->content_type);
    h.header("Content-Length", length);
    if (status == 206) {
      h.header("Content-Range", "bytes " + std::to_string(offset) + "-" +
                                    std::to_string(offset + length - 1) + "/" +
                                    std::to_string(obj->size));
    }
    h.header("ETag", obj->etag);
    h.header("Last-Modified", obj->last_modified);
    h.header("Cache-Control", cc);
    h.header("Repr-Digest", obj->digest);
    h.header("Accept-Ranges", "bytes");
    if (age >= 0) h.header("Age", static_cast<uint64_t>(age));
    if (!cache_status.empty()) h.header("Cache-Status", cache_status);
    h.header("CDN-Replica", settings_.server.name);
  }
  const bool bodiless = status == 304 || status == 204;
  if (!bodiless && obj->in_memory) {
    const std::string_view body = std::string_view(obj->body).substr(offset, length);
    ex.finish(body, obj);
  } else if (!bodiless && filling && (fd >= 0 || !ex.is_head())) {
    stream_fill(ex, relay->fill, fd, offset,
                sized ? std::optional<uint64_t>(offset + length) : std::nullopt, !sized, inbox_,
                obj, relay->first);
  } else if (!bodiless && fd >= 0) {
    // The object lives as long as the descriptor: an evicted body's blocks
    // stay counted against cache_size until its last reader is done.
    ex.finish_file(fd, offset, length, obj);
  } else {
    if (fd >= 0) ::close(fd);  // a 304 or 204 of a fill: no body to send
    ex.finish();
  }
}

void Replica::serve_status(net::Exchange& ex) {
  if (watches_.serve(ex)) return;
  sample_rate();
  const std::string body = status::encode(status(/*in_request=*/true));
  daemon::send_document(ex, "application/json", body);
}

void Replica::serve_metrics(net::Exchange& ex) {
  sample_rate();
  const auto group = members();
  const auto servers = servers_of(group);
  const auto st = daemon::add_up(servers);
  std::vector<const daemon::RequestLog*> logs{&requests_};  // its own first (see write_metrics)
  uint64_t unavailable = 0, purges = 0, purged = 0;
  for (const Replica* r : group) {
    if (r != this) logs.push_back(&r->requests_);
    unavailable += r->unavailable_total_;
    purges += r->purges_total_;
    purged += r->purged_objects_total_;
  }
  std::string m;
  metrics::PrometheusWriter w(m);
  using metrics::Type;
  w.metric("cdn_replica_connections_active", Type::Gauge, "Open client connections.",
           st.active_connections.get());
  w.metric("cdn_replica_connections_total", Type::Counter, "Accepted client connections.",
           st.connections_total.get());
  daemon::write_worker_metrics(servers, w, "cdn_replica");
  w.metric("cdn_replica_connections_rejected_total", Type::Counter,
           "Connections refused over max_connections.", st.rejected_total.get());
  w.metric("cdn_replica_connections_backlogged", Type::Gauge,
           "Connections not read until their client takes its answers.",
           st.backlogged_connections.get());
  w.metric("cdn_replica_connections_backlogged_total", Type::Counter,
           "Times a connection was stopped for a client that does not take its answers.",
           st.backlogged_total.get());
  daemon::write_http2_metrics(st, w, "cdn_replica");
  w.metric("cdn_replica_requests_total", Type::Counter, "Requests answered.",
           st.requests_total.get());
  w.metric("cdn_replica_requests_malformed_total", Type::Counter,
           "Requests refused by the HTTP layer (400, 408, 413, 431...).", st.errors_total.get());
  daemon::RequestLog::write_metrics(logs, w, "cdn_replica");
  w.metric("cdn_replica_files_unavailable_total", Type::Counter,
           "Requests for files that could not be opened now (no descriptor...), answered 503.",
           unavailable);
  w.metric("cdn_replica_sent_bytes_total", Type::Counter, "Response bytes sent.",
           st.bytes_sent.get());
  if (tls_) daemon::write_tls_metrics(w, "cdn_replica");
  w.metric("cdn_replica_load", Type::Gauge, "Active connections over capacity.",
           status(/*in_request=*/true).load);
  w.metric("cdn_replica_purges_total", Type::Counter, "Purges applied.", purges);
  w.metric("cdn_replica_purged_objects_total", Type::Counter,
           "Objects the purges named (removed, or marked stale).", purged);
  // The content figures by site: `value` gives a site's figure, or nullopt
  // when it has none (an origin's figures for a directory or a page). The
  // workers share their sites: these are every worker's figures.
  const auto per_site = [&](std::string_view name, Type type, std::string_view help,
                            const auto& value) {
    bool any = false;
    for (const auto& site : sites_) {
      const auto v = value(*site);
      if (!v) continue;
      if (!any) w.family(name, type, help);
      any = true;
      w.sample({{"site", site->name}}, *v);
    }
  };
  using Count = std::optional<uint64_t>;
  const auto pulled = [](auto get) {
    return [get](const Site& site) -> Count {
      if (!site.pull) return std::nullopt;
      return get(site.pull->stats(), site.pull->cache());
    };
  };
  per_site("cdn_replica_cache_hits_total", Type::Counter, "Requests answered from the cache.",
           pulled([](const PullStats& ps, const DiskCache&) { return ps.hits; }));
  per_site("cdn_replica_cache_misses_total", Type::Counter,
           "Requests that waited for the origin (miss or revalidation).",
           pulled([](const PullStats& ps, const DiskCache&) { return ps.misses; }));
  per_site("cdn_replica_cache_hit_ratio", Type::Gauge, "Hits over hits and misses.",
           [](const Site& site) -> std::optional<double> {
             if (!site.pull) return std::nullopt;
             const auto& ps = site.pull->stats();
             const uint64_t asked = ps.hits + ps.misses;
             return asked > 0 ? static_cast<double>(ps.hits) / static_cast<double>(asked) : 0.0;
           });
  per_site("cdn_replica_cache_stale_served_total", Type::Counter,
           "Stale copies served (while revalidating or while the origin failed).",
           pulled([](const PullStats& ps, const DiskCache&) { return ps.stale_served; }));
  per_site("cdn_replica_cache_revalidated_total", Type::Counter, "Copies refreshed by a 304.",
           pulled([](const PullStats& ps, const DiskCache&) { return ps.revalidated; }));
  per_site("cdn_replica_cache_bytes", Type::Gauge, "Bytes of cached bodies on disk.",
           pulled([](const PullStats&, const DiskCache& c) { return c.bytes(); }));
  per_site("cdn_replica_cache_memory_bytes", Type::Gauge,
           "Bytes of bodies held in memory (cached, or local files up to cache_memory).",
           [](const Site& site) -> Count {
             return site.pull ? site.pull->cache().memory_bytes() : site.store->memory_bytes();
           });
  per_site("cdn_replica_cache_objects", Type::Gauge,
           "Cached objects, or local files remembered (metadata, digest).",
           [](const Site& site) -> Count {
             return site.pull ? site.pull->cache().objects() : site.store->entries();
           });
  per_site("cdn_replica_cache_index_bytes", Type::Gauge,
           "Memory the cache's index takes for its objects (an estimate; bodies not counted).",
           pulled([](const PullStats&, const DiskCache& c) { return c.index_bytes(); }));
  per_site("cdn_replica_cache_evictions_total", Type::Counter,
           "Objects evicted, or local files forgotten (LRU).", [](const Site& site) -> Count {
             return site.pull ? site.pull->cache().evictions() : site.store->evictions();
           });
  per_site("cdn_replica_cache_writes_failed_total", Type::Counter,
           "Objects that could not be stored (disk full, I/O errors).",
           pulled([](const PullStats&, const DiskCache& c) { return c.write_errors(); }));
  per_site("cdn_replica_origin_requests_total", Type::Counter, "Requests sent to the origin.",
           pulled([](const PullStats& ps, const DiskCache&) { return ps.origin_requests; }));
  per_site("cdn_replica_origin_requests_failed_total", Type::Counter,
           "Origin fetches that failed (unreachable, timeout, 5xx, bad digest).",
           pulled([](const PullStats& ps, const DiskCache&) { return ps.origin_errors; }));
  per_site("cdn_replica_origin_requests_cancelled_total", Type::Counter,
           "Origin fetches cancelled because every client waiting on them had gone.",
           pulled([](const PullStats& ps, const DiskCache&) { return ps.origin_cancelled; }));
  metrics::write_build_info(w, CDN_VERSION);
  metrics::write_process_metrics(w, metrics::read_process_stats());
  daemon::send_document(ex, "text/plain; version=0.0.4", m);
}

Replicas::Replicas(uv_loop_t* loop, config::ReplicaSettings settings, std::unique_ptr<Store> store)
    : loop_(loop), inbox_(daemon::Inbox::make(loop)) {
  use_mime_types(settings.content);
  if (settings.tls.enabled()) {
    tls_ = std::make_shared<daemon::TlsCertificates>(settings.tls,
                                                     daemon::site_certificates(settings));
  }
  members_.push_back(std::make_unique<Replica>(loop, std::move(settings), std::move(store), nullptr,
                                               connections_, nullptr, tls_));
}

Replicas::~Replicas() {
  if (threads_) threads_->stop([this](size_t i) { members_[i + 1].reset(); });
}

void Replicas::start() {
  Replica& first = *members_.front();
  const uint32_t workers = config::resolve_workers(first.settings().server.workers);
  const auto where = first.start(workers);
  if (workers == 1) return;
  threads_ = std::make_unique<daemon::WorkerThreads>(workers - 1);
  members_.resize(workers);
  const auto log = first.requests().shared(first.settings().log);
  // Every Replica exists before any listens: a worker's pages read the
  // others. They serve worker 0's sites (shared stores).
  for (size_t i = 1; i < workers; ++i) {
    threads_->call(i - 1, [&, i] {
      members_[i] = std::make_unique<Replica>(threads_->loop(i - 1), first.settings(), nullptr,
                                              &log, connections_, &first, tls_);
    });
  }
  for (auto& r : members_) r->set_group(&members_);
  for (size_t i = 1; i < workers; ++i) {
    threads_->call(i - 1, [&, i] { members_[i]->start_worker(where); });
  }
}

void Replicas::reconfigure(config::ReplicaSettings settings, Replica::OpenedSites sites,
                           const daemon::ObserverReload& observers) {
  const auto& now = members_.front()->settings();
  if (settings.server.address != now.server.address ||
      (settings.server.port != now.server.port && settings.server.port != 0)) {
    spdlog::warn("[server] address/port changed: takes effect at the next restart");
  }
  if (settings.server.workers != now.server.workers) {
    spdlog::warn("[server] workers changed: takes effect at the next restart");
  }
  // Read again even when the path is the same: the file may be what changed.
  use_mime_types(settings.content);
  // Worker 0 first: it opens or reopens the access log, whose writer the
  // others then take as it is (one reopen, not one per worker). Every worker
  // has the new settings before the reload is reported done.
  // Worker 0 builds the sites anew; the others take its sites as they are.
  Replica& first = *members_.front();
  first.reconfigure(settings, std::move(sites), observers);
  auto others = observers;
  others.log = first.requests().shared(settings.log);
  for (size_t i = 1; i < members_.size(); ++i) {
    threads_->call(i - 1, [&, i] { members_[i]->reconfigure(settings, {}, others, &first); });
  }
}

void Replicas::drain(std::function<void()> done) {
  daemon::drain_workers(
      threads_.get(), members_.size(), inbox_,
      [this](size_t i, std::function<void()> drained) { members_[i]->drain(std::move(drained)); },
      std::move(done));
}

void Replicas::stop() {
  for (size_t i = 0; i < members_.size(); ++i) {
    // A worker's Replica is missing when start-up failed half-way.
    if (members_[i]) daemon::on_worker(threads_.get(), i, [this, i] { members_[i]->stop(); });
  }
  inbox_->close();
}

}  // namespace cdn::replica
