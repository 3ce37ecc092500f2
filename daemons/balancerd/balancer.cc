// SPDX-License-Identifier: MIT
#include "daemons/balancerd/balancer.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <iterator>
#include <random>

#include <nlohmann/json.hpp>

#include "cdn_config.h"
#include "common/config/site_map.hpp"
#include "common/http/path.hpp"
#include "common/log/log.hpp"
#include "common/metrics/process.hpp"
#include "common/metrics/prometheus.hpp"
#include "daemons/lifecycle.hpp"

namespace cdn::balancer {

// Generated from dashboard.html by daemons/embed_page.py (meson.build).
extern const daemon::Page kDashboard;

namespace {

// The dashboard's chart: 30 intervals of 10 s, the last five minutes.
constexpr auto kTrafficInterval = std::chrono::seconds(10);
constexpr size_t kTrafficSlots = 30;

using Json = nlohmann::json;

std::string retry_after_seconds(std::chrono::milliseconds d) {
  const auto s =
      std::chrono::duration_cast<std::chrono::seconds>(d + std::chrono::milliseconds(999));
  return std::to_string(std::max<int64_t>(1, s.count()));
}

double round3(double v) { return std::round(v * 1000) / 1000; }

// The public view of a replica (locate): where it is and how it ranks.
Json public_replica_json(const Replica& r) {
  Json j;
  j["address"] = r.address.str();
  j["health"] = std::string(to_string(r.health));
  j["rtt_ms"] = r.rtt_ms ? Json(round3(*r.rtt_ms)) : Json(nullptr);
  j["load"] = round3(r.reported_load);
  j["score"] = round3(r.score);
  return j;
}

// The operators' view (status): with what the probes saw, errors included.
Json replica_json(const Replica& r, Clock::time_point now) {
  Json j;
  j["address"] = r.address.str();
  j["resolved"] = r.resolved;
  j["health"] = std::string(to_string(r.health));
  j["rtt_ms"] = r.rtt_ms ? Json(round3(*r.rtt_ms)) : Json(nullptr);
  j["loss"] = round3(r.loss);
  j["load"] = round3(r.reported_load);
  j["capacity"] = r.reported_capacity;
  j["sent_since_probe"] = r.sent_since_probe;
  j["score"] = round3(r.score);
  j["redirects"] = r.redirects_total;
  j["probes_failed"] = r.probe_failures_total;
  j["last_error"] = r.last_error;
  j["name"] = r.last_status.name;
  // What it serves (its status): the sites, and the hosts routed to it.
  j["sites"] = r.last_status.sites;
  j["hosts"] = r.last_status.hosts;
  j["last_probe_ms_ago"] =
      r.last_probe
          ? Json(std::chrono::duration_cast<std::chrono::milliseconds>(now - *r.last_probe).count())
          : Json(nullptr);
  return j;
}

}  // namespace

Snapshot::Snapshot(const Table& t, uint64_t layout_, const Prober& p, const Purger& purger)
    : table(t),
      layout(layout_),
      sent(std::make_unique<std::atomic<uint64_t>[]>(t.replicas().size())),
      probes_total(p.probes_total()),
      streamed_total(p.streamed_total()),
      probe_failures_total(p.probe_failures_total()),
      early_probes_total(p.early_probes_total()),
      purges_total(purger.purges_total()),
      purges_forwarded_total(purger.forwarded_total()),
      purges_forward_failed_total(purger.forward_failures_total()),
      purges_owed(purger.owed_total()) {}

namespace {

// [admin] state_dir, else the unit's StateDirectory= (systemd passes it as
// $STATE_DIRECTORY, several joined by ':'), else none.
std::string ledger_file(const config::BalancerSettings& s) {
  std::string dir = s.state_dir;
  if (dir.empty()) {
    const char* env = std::getenv("STATE_DIRECTORY");
    if (env != nullptr) dir = std::string_view(env).substr(0, std::string_view(env).find(':'));
  }
  return dir.empty() ? std::string() : dir + "/purge-ledger";
}

}  // namespace

Balancer::Balancer(uv_loop_t* loop, config::BalancerSettings settings)
    : loop_(loop),
      settings_(std::move(settings)),
      table_(settings_.replicas, settings_.probe, settings_.balance),
      prober_(loop, table_),
      purger_(loop, table_),
      inbox_(daemon::Inbox::make(loop)) {
  if (settings_.tls.enabled()) tls_ = std::make_shared<daemon::TlsCertificates>(settings_.tls);
  // Front 0 is made now: main.cc's reload reads its request log.
  auto log = daemon::RequestLog("cdn-balancerd").prepare(settings_.log);
  fronts_.push_back(std::make_unique<Front>(loop_, *this, settings_, log));
  // Purges owed from before a restart: those replicas are held from now.
  purger_.set_token(fronts_[0]->admin().token());
  purger_.use_state_file(ledger_file(settings_));
  purger_.reconfigured();
}

Balancer::~Balancer() {
  if (threads_) threads_->stop([this](size_t i) { fronts_[i + 1].reset(); });
}

bool Balancer::workers_alive(std::chrono::steady_clock::time_point since) const {
  return !threads_ || threads_->all_beat_since(since);
}

void Balancer::publish(bool force) {
  const std::array<uint64_t, 3> purges{purger_.purges_total(), purger_.forwarded_total(),
                                       purger_.owed_total()};
  bool changed =
      force || prober_.probes_total() != published_probes_ || purges != published_purges_;
  std::vector<std::shared_ptr<const Snapshot>> keep;
  for (auto& snap : unfolded_) {
    if (snap->layout != layout_) continue;  // indices of an older list: dropped
    // Held by no front (only this list; the board holds the newest): no
    // count can come after the fold below. The fence pairs with the release
    // of the front's reference, so its last counts are seen.
    const bool idle = snap.use_count() == 1;
    if (idle) std::atomic_thread_fence(std::memory_order_acquire);
    for (size_t i = 0; i < snap->table.replicas().size(); ++i) {
      const uint64_t n = snap->sent[i].exchange(0, std::memory_order_relaxed);
      if (n == 0) continue;
      table_.add_sent(i, n);
      changed = true;
    }
    if (!idle) keep.push_back(std::move(snap));
  }
  unfolded_ = std::move(keep);
  if (!changed) return;
  published_probes_ = prober_.probes_total();
  published_purges_ = purges;
  table_.prepare_snapshot();
  auto snap = std::make_shared<const Snapshot>(table_, layout_, prober_, purger_);
  unfolded_.push_back(snap);
  board_.publish(std::move(snap));
}

void Balancer::start() {
  const uint32_t workers = config::resolve_workers(settings_.server.workers);
  publish(true);
  const auto listening =
      daemon::start_listening(fronts_[0]->server(), settings_.server, workers, settings_.tls, tls_);
  if (settings_.server.name.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    settings_.server.name = std::string(host) + ":" + std::to_string(listening.port);
  }
  fronts_[0]->set_name(settings_.server.name);  // made before the name was known
  if (workers > 1) {
    threads_ = std::make_unique<daemon::WorkerThreads>(workers - 1);
    fronts_.resize(workers);
    const auto log = fronts_[0]->requests().shared(settings_.log);
    // Every front exists before any listens: a front's pages read the others.
    for (size_t i = 1; i < workers; ++i) {
      threads_->call(i - 1, [&, i] {
        fronts_[i] = std::make_unique<Front>(threads_->loop(i - 1), *this, settings_, log);
      });
    }
    for (size_t i = 1; i < workers; ++i) {
      threads_->call(i - 1, [&, i] {
        daemon::join_listening(fronts_[i]->server(), settings_.server, listening, settings_.tls,
                               tls_);
        fronts_[i]->start_sampling();
      });
    }
  }
  fronts_[0]->start_sampling();
  publish_timer_ = uv::make_timer(loop_, [this] { publish(); });
  const auto every = static_cast<uint64_t>(kPublishEvery.count());
  uv::timer_start(publish_timer_.get(), every, every);
  prober_.start(settings_.probe);
  purger_.start();
  spdlog::info("balancer {} on {}: {} replicas, policy {}, {} worker(s)", settings_.server.name,
               listening.where, table_.replicas().size(), to_string(table_.policy()), workers);
}

void Balancer::reconfigure(config::BalancerSettings settings,
                           const daemon::ObserverReload& observers) {
  if (settings.server.address != settings_.server.address ||
      (settings.server.port != settings_.server.port && settings.server.port != 0)) {
    spdlog::warn("[server] address/port changed: takes effect at the next restart");
  }
  if (settings.server.workers != settings_.server.workers) {
    spdlog::warn("[server] workers changed: takes effect at the next restart");
  }
  if (settings.server.name.empty()) settings.server.name = settings_.server.name;
  settings.server.address = settings_.server.address;
  settings.server.port = settings_.server.port;
  settings.server.workers = settings_.server.workers;
  settings.tls.port = settings_.tls.port;  // read at start only
  settings.tls.address = settings_.tls.address;
  // The fronts' counts are folded under the old layout, then the new table
  // is published before any front answers from its new settings.
  publish();
  table_.reconfigure(settings.replicas, settings.probe, settings.balance);
  purger_.set_token(observers.admin.token());
  if (const auto file = ledger_file(settings); file != ledger_file(settings_)) {
    purger_.use_state_file(file);
  }
  purger_.reconfigured();
  ++layout_;
  publish(true);
  settings_ = std::move(settings);
  // Front 0 first: it opens or reopens the access log, whose writer the
  // others then take as it is (one reopen, not one per front).
  fronts_[0]->reconfigure(settings_, observers);
  auto others = observers;
  others.log = fronts_[0]->requests().shared(settings_.log);
  for (size_t i = 1; i < fronts_.size(); ++i) {
    threads_->call(i - 1, [&, i] { fronts_[i]->reconfigure(settings_, others); });
  }
  prober_.start(settings_.probe);
  spdlog::info("{} replicas, policy {}", table_.replicas().size(), to_string(table_.policy()));
}

void Balancer::drain(std::function<void()> done) {
  draining_ = true;
  prober_.stop();
  purger_.stop();
  daemon::drain_workers(
      threads_.get(), fronts_.size(), inbox_,
      [this](size_t i, std::function<void()> drained) { fronts_[i]->drain(std::move(drained)); },
      std::move(done));
}

void Balancer::stop() {
  prober_.stop();
  purger_.stop();
  publish_timer_.reset();
  for (size_t i = 0; i < fronts_.size(); ++i) {
    // A front is missing when start-up failed half-way.
    if (fronts_[i]) daemon::on_worker(threads_.get(), i, [this, i] { fronts_[i]->stop(); });
  }
  inbox_->close();
}

std::string Balancer::status_line() const {
  uint64_t redirects = 0;
  for (const auto& f : fronts_) redirects += f->redirects_total;
  return fmt::format("{}{}/{} replicas up, policy {}, {} redirects", draining() ? "draining: " : "",
                     table_.up_count(), table_.distinct_count(), to_string(table_.policy()),
                     redirects);
}

Front::Front(uv_loop_t* loop, Balancer& shared, const config::BalancerSettings& settings,
             const daemon::RequestLog::Prepared& log)
    : loop_(loop),
      shared_(shared),
      settings_(settings),
      admin_(daemon::AdminGate::from(settings_.admin)),
      server_(loop, options(), [this](net::Exchange& ex) { handle(ex); }),
      watches_(loop, [this] { return status_document(); }),
      traffic_(kTrafficInterval, kTrafficSlots) {
  requests_.apply(log);
}

void Front::start_sampling() {
  sample_traffic(Clock::now());
  traffic_timer_ = uv::make_timer(loop_, [this] { sample_traffic(Clock::now()); });
  uv::timer_start(traffic_timer_.get(), 1000, 1000);
}

void Front::drain(std::function<void()> done) {
  traffic_timer_.reset();
  // Watching dashboards hear of the drain now; the streams end so that the
  // drain can finish.
  watches_.end_all();
  server_.drain(std::move(done));
}

void Front::stop() {
  traffic_timer_.reset();
  watches_.clear();
  server_.close();
  inbox_->close();
}

void Balancer::purge(purge::Request r, std::string token, daemon::Answer answer) {
  // On the front's loop: the purger (and the table it holds replicas in)
  // lives on the main loop.
  inbox_->post([this, r = std::move(r), token = std::move(token), answer = std::move(answer)] {
    // The snapshot the fronts answer from shows the replicas this purge
    // held (or released) before its client hears of it.
    if (router_.generation() != table_.sites_generation()) {
      router_.rebuild(table_.replicas(), table_.sites_generation());
    }
    const std::vector<char>* only = router_.eligible(r.site);
    purger_.purge(
        r, token,
        [this, answer](daemon::Reply reply) {
          publish(true);
          answer(std::move(reply));
        },
        only);
  });
}

net::ServerOptions Front::options() {
  auto o = daemon::server_options(settings_.server, "cdn-balancerd/" CDN_VERSION);
  o.on_complete = [this](const net::RequestRecord& r) {
    // Counted under the site of its Host, as the replicas count theirs.
    requests_.record(r, router().site_of(r.request.header("Host").value_or("")));
  };
  o.group = shared_.server_group();  // max_connections is the daemon's
  return o;
}

void Front::reconfigure(const config::BalancerSettings& settings,
                        const daemon::ObserverReload& observers) {
  requests_.apply(observers.log);
  admin_ = observers.admin;
  settings_ = settings;
  server_.set_options(options());
}

Table& Front::table() {
  if (shared_.board().refresh(snapshot_, seen_)) {
    if (table_) {
      table_->adopt(snapshot_->table);
    } else {
      table_.emplace(snapshot_->table);
      table_->reseed(std::random_device{}());
      if (shared_.fronts().size() > 1) table_->share_rotation(shared_.rotation_ticket());
    }
  }
  return *table_;
}

void Front::handle(net::Exchange& ex) {
  if (ex.request().method == "PURGE") {
    // Checked before anything else: the allow-list, the token, the request.
    if (auto r = admin_.admit_purge(ex)) {
      // Sent to the replicas of the purge's site (its Host) only: 421 here
      // when no replica serves it; the main loop picks them in its table.
      bool answered = false;
      replicas_for(ex, r->site, answered);
      if (!answered) shared_.purge(std::move(*r), admin_.token(), daemon::answer_later(ex, inbox_));
    }
    return;
  }
  const auto path = daemon::accept_request(ex);
  if (!path) return;
  if (path->starts_with("/.cdn/")) {
    // Locate is the clients' (it says where a path would be sent, as a 302
    // would); every other endpoint is the operators' (observe.hpp).
    if (*path == "/.cdn/locate") {
      serve_locate(ex);
      return;
    }
    if (!admin_.admit(ex)) return;
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
  redirect(ex, *path);
}

const std::string& Front::url_prefix(size_t index, bool https) {
  const Replica& r = table().replicas()[index];
  if (url_prefixes_.size() <= index) url_prefixes_.resize(index + 1);
  Prefixes& p = url_prefixes_[index];
  if (p.http.empty() || !(p.address == r.address) || p.public_host != r.public_host ||
      p.tls_port != r.tls_port) {
    p.address = r.address;
    p.public_host = r.public_host;
    p.tls_port = r.tls_port;
    p.http = http_prefix(r);
    p.https = https_prefix(r);
  }
  // A replica without a TLS port is never routed to a TLS client as https.
  return https && !p.https.empty() ? p.https : p.http;
}

const SiteRouter& Front::router() {
  Table& t = table();
  if (router_.generation() != t.sites_generation()) {
    router_.rebuild(t.replicas(), t.sites_generation());
  }
  return router_;
}

const std::vector<char>* Front::replicas_for(net::Exchange& ex, std::string_view host,
                                             bool& answered) {
  answered = false;
  const std::vector<char>* only = router().eligible(host);
  if (only != nullptr && !SiteRouter::any(*only)) {
    // RFC 9110 15.5.20: no replica of this fleet is configured for the host.
    ++misdirected_total;
    ex.reply(421, "no replica serves this host", {{"Cache-Control", "no-store"}});
    answered = true;
  }
  return only;
}

void Front::redirect(net::Exchange& ex, const std::string& path) {
  bool answered = false;
  const auto* site = replicas_for(ex, ex.request().header("Host").value_or(""), answered);
  if (answered) return;
  Table& t = table();
  const auto [only, https] = schemes_.route(t.replicas(), site, ex.secure(), t.sites_generation());
  t.choose(path, 1 + settings_.balance.fallbacks, Clock::now(), picks_, only);
  const auto& picks = picks_;
  if (picks.empty()) {
    ++unavailable_total;
    cdn::log::event(
        spdlog::level::debug,
        {{cdn::log::kClient, ex.peer()}, {cdn::log::kPath, path}, {cdn::log::kStatus, "503"}},
        "{} {}: no replica up", ex.peer(), path);
    ex.reply(503, "no replica is available, try again later",
             {{"Retry-After", retry_after_seconds(settings_.balance.retry_after)},
              {"Cache-Control", "no-store"}});
    return;
  }
  ++redirects_total;
  // Counted for the other fronts too (folded by the main loop).
  snapshot_->sent[picks.front().index].fetch_add(1, std::memory_order_relaxed);
  // The Location is built from the configured replica, the normalised path
  // and the query, both %-encoded: nothing from the request's headers reaches
  // it, and no byte of its target can end a URL of the list (a ',' would add
  // a URL of the client's choosing to CDN-Fallback) or split the header.
  tail_.clear();
  http::append_encoded_path(tail_, path);
  const auto query = http::query_of(ex.request().target);
  if (!query.empty()) {
    tail_.push_back('?');
    http::append_encoded_query(tail_, query);
  }
  location_.assign(url_prefix(picks.front().index, https)).append(tail_);
  // The access log's upstream is the replica's address, whatever the scheme.
  ex.note_upstream(std::string_view(url_prefix(picks.front().index, false)).substr(7));
  fallbacks_.clear();
  for (size_t i = 1; i < picks.size(); ++i) {
    if (!fallbacks_.empty()) fallbacks_.append(", ");
    fallbacks_.append(url_prefix(picks[i].index, https)).append(tail_);
  }
  if (spdlog::should_log(spdlog::level::debug)) {
    // Checked first: the replica's address string is built only when logged.
    const std::string replica = table().replicas()[picks.front().index].address.str();
    cdn::log::event(spdlog::level::debug,
                    {{cdn::log::kClient, ex.peer()},
                     {cdn::log::kPath, path},
                     {cdn::log::kReplica, replica},
                     {cdn::log::kStatus, "302"}},
                    "{} {} -> {}", ex.peer(), path, location_);
  }
  body_.assign("See ").append(location_).push_back('\n');
  auto& h = ex.begin(302);
  h.header("Location", location_);
  if (!fallbacks_.empty()) h.header("CDN-Fallback", fallbacks_);
  // The lines every redirect carries, written as one piece.
  h.prebuilt("Cache-Control: no-store\r\nContent-Type: text/plain; charset=utf-8\r\n");
  h.header("Content-Length", static_cast<uint64_t>(body_.size()));
  ex.finish(body_);
}

void Front::serve_locate(net::Exchange& ex) {
  ++locates_total;
  const auto query = http::query_of(ex.request().target);
  const auto raw = http::query_param(query, "path");
  std::optional<std::string> path;
  if (raw) path = http::normalize_path(*raw);
  if (!path) {
    ex.reply(400, "locate needs ?path=/some/path");
    return;
  }
  // The site: ?host= when given (a client asking for another), else Host.
  const auto host = http::query_param(query, "host");
  const std::string_view host_name =
      host ? std::string_view(*host) : ex.request().header("Host").value_or("");
  bool answered = false;
  const auto* site = replicas_for(ex, host_name, answered);
  if (answered) return;
  Table& t = table();
  // Ranked as a 302 would choose for this client: a TLS client among the
  // replicas with a TLS port (scheme.hpp).
  const auto [only, https] = schemes_.route(t.replicas(), site, ex.secure(), t.sites_generation());
  std::vector<Choice> picks;
  t.rank(*path, t.replicas().size(), Clock::now(), picks, only);
  // The path goes into the document %-encoded, as in the URLs: a decoded one
  // may hold any byte, and bytes that are not UTF-8 make the JSON writer throw.
  const std::string tail = http::encode_path(*path);
  Json doc;
  doc["path"] = tail;
  doc["policy"] = std::string(to_string(t.policy()));
  doc["scheme"] = https ? "https" : "http";
  if (site != nullptr) doc["host"] = config::host_key(host_name).value_or("");
  Json list = Json::array();
  for (const auto& c : picks) {
    Json j = public_replica_json(t.replicas()[c.index]);
    // Both URLs of the replica, and the one a 302 would send this client to.
    j["http_url"] = url_prefix(c.index, false) + tail;
    if (t.replicas()[c.index].tls_port != 0) j["https_url"] = url_prefix(c.index, true) + tail;
    j["url"] = url_prefix(c.index, https) + tail;
    j["score"] = round3(c.score);
    list.push_back(std::move(j));
  }
  doc["replicas"] = std::move(list);
  const std::string body = doc.dump();
  if (picks.empty()) {
    ex.reply(503, body,
             {{"Retry-After", retry_after_seconds(settings_.balance.retry_after)},
              {"Cache-Control", "no-store"}});
    return;
  }
  daemon::send_document(ex, "application/json", body);
}

uint64_t Front::redirects_of(size_t i) const {
  return snapshot_->table.replicas()[i].redirects_total +
         snapshot_->sent[i].load(std::memory_order_relaxed);
}

void Front::sample_traffic(Clock::time_point now) {
  // Every front's clients (its snapshot's folded counts and those since).
  Table& t = table();
  traffic_totals_.clear();
  for (size_t i = 0; i < t.replicas().size(); ++i) {
    const auto& r = t.replicas()[i];
    if (!r.same_as) traffic_totals_.emplace_back(r.address.str(), redirects_of(i));
  }
  traffic_.sample(now, traffic_totals_);
}

void Front::serve_status(net::Exchange& ex) {
  if (watches_.serve(ex)) return;
  daemon::send_document(ex, "application/json", status_document());
}

std::string Front::status_document() {
  const auto now = Clock::now();
  sample_traffic(now);
  Table& t = table();
  uint64_t redirects = 0, unavailable = 0;
  Json workers = Json::array();
  for (const auto& f : shared_.fronts()) {
    redirects += f->redirects_total;
    unavailable += f->unavailable_total;
    const auto& st = f->server().stats();
    workers.push_back({{"connections_total", st.connections_total.get()},
                       {"connections_active", st.active_connections.get()}});
  }
  Json doc;
  doc["name"] = settings_.server.name;
  doc["state"] = shared_.draining() ? "draining" : "serving";
  doc["policy"] = std::string(to_string(t.policy()));
  doc["up"] = t.up_count();
  doc["total"] = t.distinct_count();
  doc["redirects_total"] = redirects;
  doc["unavailable_total"] = unavailable;
  doc["purges_owed"] = snapshot_->purges_owed;
  doc["version"] = CDN_VERSION;
  doc["workers"] = std::move(workers);
  doc["traffic_interval_s"] =
      std::chrono::duration_cast<std::chrono::seconds>(traffic_.interval()).count();
  Json list = Json::array();
  // A replica listed twice (two spellings of one address) is shown once.
  for (size_t i = 0; i < t.replicas().size(); ++i) {
    const auto& r = t.replicas()[i];
    if (r.same_as) continue;
    Json j = replica_json(r, now);
    j["redirects"] = redirects_of(i);
    // Clients sent per interval, oldest first, the last one under way.
    j["recent_redirects"] = traffic_.counts(r.address.str(), now);
    list.push_back(std::move(j));
  }
  doc["replicas"] = std::move(list);
  return doc.dump();
}

void Front::serve_metrics(net::Exchange& ex) {
  Table& t = table();
  const Snapshot& snap = *snapshot_;
  std::vector<const net::Server*> servers;
  std::vector<const daemon::RequestLog*> logs{&requests_};  // its own first (see write_metrics)
  uint64_t redirects = 0, unavailable = 0, misdirected = 0;
  for (const auto& f : shared_.fronts()) {
    servers.push_back(&f->server());
    if (f.get() != this) logs.push_back(&f->requests());
    redirects += f->redirects_total;
    unavailable += f->unavailable_total;
    misdirected += f->misdirected_total;
  }
  const net::ServerStats st = daemon::add_up(servers);
  // Sized up front and formatted in place: with 10,000 replicas the page is
  // ~11 MB, and growing it by doubling through temporaries doubled the peak RSS.
  // Owned by the write, not copied into the connection's pooled buffer
  // (which would keep its 11 MB for good).
  auto page = std::make_shared<std::string>();
  std::string& m = *page;
  m.reserve(4096 + t.replicas().size() * 1280);
  metrics::PrometheusWriter w(m);
  using metrics::Type;
  w.metric("cdn_balancer_redirects_total", Type::Counter, "Clients sent to a replica.", redirects);
  w.metric("cdn_balancer_redirects_failed_total", Type::Counter,
           "Clients answered 503 (no replica up).", unavailable);
  w.metric("cdn_balancer_misdirected_total", Type::Counter,
           "Clients answered 421 (no replica serves their Host).", misdirected);
  w.metric("cdn_balancer_requests_total", Type::Counter, "Requests answered.",
           st.requests_total.get());
  w.metric("cdn_balancer_requests_malformed_total", Type::Counter,
           "Requests refused by the HTTP layer (400, 408, 413, 431...).", st.errors_total.get());
  daemon::RequestLog::write_metrics(logs, w, "cdn_balancer");
  w.metric("cdn_balancer_connections_active", Type::Gauge, "Open client connections.",
           st.active_connections.get());
  daemon::write_worker_metrics(servers, w, "cdn_balancer");
  w.metric("cdn_balancer_connections_backlogged", Type::Gauge,
           "Connections not read until their client takes its answers.",
           st.backlogged_connections.get());
  w.metric("cdn_balancer_connections_backlogged_total", Type::Counter,
           "Times a connection was stopped for a client that does not take its answers.",
           st.backlogged_total.get());
  daemon::write_http2_metrics(st, w, "cdn_balancer");
  w.metric("cdn_balancer_probes_total", Type::Counter,
           "Health probe outcomes: answers, failures and streamed status documents.",
           snap.probes_total);
  w.metric("cdn_balancer_probes_streamed_total", Type::Counter,
           "Status documents that came on a replica's status stream.", snap.streamed_total);
  w.metric("cdn_balancer_probes_failed_total", Type::Counter, "Health probes that failed.",
           snap.probe_failures_total);
  w.metric("cdn_balancer_replicas_up", Type::Gauge, "Replicas taking clients.", t.up_count());
  w.metric("cdn_balancer_purges_total", Type::Counter, "Purges accepted.", snap.purges_total);
  w.metric("cdn_balancer_purges_forwarded_total", Type::Counter,
           "Purges sent to replicas (retries included).", snap.purges_forwarded_total);
  w.metric("cdn_balancer_purges_forward_failed_total", Type::Counter,
           "Purges a replica did not acknowledge when sent.", snap.purges_forward_failed_total);
  w.metric("cdn_balancer_purges_owed", Type::Gauge,
           "Purges replicas owe (held out of the choice until applied).", snap.purges_owed);
  w.metric("cdn_balancer_probes_early_total", Type::Counter,
           "Probes sent at once because a replica closed the probe connection.",
           snap.early_probes_total);
  w.metric("cdn_balancer_sent_bytes_total", Type::Counter, "Response bytes the balancer sent.",
           st.bytes_sent.get());
  if (shared_.tls()) daemon::write_tls_metrics(w, "cdn_balancer");
  t.refresh_scores(Clock::now());
  const auto& rs = t.replicas();
  // One family per figure, one sample per replica.
  auto family = [&](std::string_view name, Type type, std::string_view help, auto value) {
    w.family(name, type, help);
    for (const auto& r : rs) {
      if (r.same_as) continue;
      const std::optional<double> v = value(r);
      if (v) w.sample({{"replica", r.address.str()}}, *v);
    }
  };
  using Opt = std::optional<double>;
  family("cdn_balancer_replica_up", Type::Gauge, "1 when the replica takes clients.",
         [](const Replica& r) { return Opt(r.health == Health::Up ? 1 : 0); });
  w.family("cdn_balancer_replica_state", Type::Gauge, "1 for the replica's current state.");
  for (const auto& r : rs) {
    if (r.same_as) continue;
    const std::string address = r.address.str();
    for (Health h : {Health::Up, Health::Down, Health::Draining, Health::Held}) {
      w.sample({{"replica", address}, {"state", to_string(h)}}, uint64_t{r.health == h});
    }
  }
  family("cdn_balancer_replica_rtt_seconds", Type::Gauge, "Probe round-trip time (EWMA).",
         [](const Replica& r) { return r.rtt_ms ? Opt(*r.rtt_ms / 1000.0) : Opt(); });
  family("cdn_balancer_replica_base_rtt_seconds", Type::Gauge,
         "Lowest probe round-trip time of the last 10 (what the score uses).",
         [](const Replica& r) { return r.base_rtt_ms ? Opt(*r.base_rtt_ms / 1000.0) : Opt(); });
  family("cdn_balancer_replica_weight", Type::Gauge, "The operator's round-robin weight.",
         [](const Replica& r) { return Opt(static_cast<double>(r.weight)); });
  family("cdn_balancer_replica_loss_ratio", Type::Gauge, "Failed probes (EWMA, 0..1).",
         [](const Replica& r) { return Opt(r.loss); });
  family("cdn_balancer_replica_probes_failed_total", Type::Counter, "Failed probes.",
         [](const Replica& r) { return Opt(static_cast<double>(r.probe_failures_total)); });
  family("cdn_balancer_replica_last_probe_age_seconds", Type::Gauge, "Time since the last probe.",
         [now = Clock::now()](const Replica& r) {
           return r.last_probe ? Opt(std::chrono::duration<double>(now - *r.last_probe).count())
                               : Opt();
         });
  family("cdn_balancer_replica_load", Type::Gauge, "Load the replica reported (active/capacity).",
         [](const Replica& r) { return Opt(r.reported_load); });
  family("cdn_balancer_replica_load_estimate", Type::Gauge,
         "Load the choice uses: reported (with bytes/s) plus clients sent since the probe.",
         [](const Replica& r) { return Opt(load_estimate(r)); });
  family("cdn_balancer_replica_capacity", Type::Gauge, "Connections at load 1.0, as reported.",
         [](const Replica& r) { return Opt(static_cast<double>(r.reported_capacity)); });
  family(
      "cdn_balancer_replica_connections", Type::Gauge, "Active connections, as reported.",
      [](const Replica& r) { return Opt(static_cast<double>(r.last_status.active_connections)); });
  family("cdn_balancer_replica_sent_bytes_per_second", Type::Gauge, "Send rate, as reported.",
         [](const Replica& r) { return Opt(r.bytes_per_second); });
  family("cdn_balancer_replica_sent_bytes_total", Type::Counter, "Body bytes sent, as reported.",
         [](const Replica& r) { return Opt(static_cast<double>(r.last_status.bytes_total)); });
  family("cdn_balancer_replica_score", Type::Gauge, "Score (lower is better).",
         [](const Replica& r) { return Opt(r.score); });
  family("cdn_balancer_replica_redirects_total", Type::Counter, "Clients sent to the replica.",
         [&](const Replica& r) {
           return Opt(static_cast<double>(redirects_of(static_cast<size_t>(&r - rs.data()))));
         });
  metrics::write_build_info(w, CDN_VERSION);
  metrics::write_process_metrics(w, metrics::read_process_stats());
  daemon::send_document(ex, "text/plain; version=0.0.4", m, std::move(page));
}

}  // namespace cdn::balancer
