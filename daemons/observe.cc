// SPDX-License-Identifier: MIT
#include "daemons/observe.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "common/text/text.hpp"

namespace cdn::daemon {

RequestLog::Prepared RequestLog::prepare(const config::LogSettings& s) const {
  Prepared p{s, nullptr};
  if (s.access != "off" && s.access != target_) {
    access::WriterOptions o;
    o.target = s.access;
    o.identifier = identifier_;
    p.writer = std::make_shared<access::Writer>(std::move(o));
  }
  return p;
}

void RequestLog::apply(Prepared p) {
  format_ = access::format_from_string(p.settings.access_format).value_or(access::Format::Combined);
  if (p.settings.access == "off") {
    writer_.reset();
  } else if (p.writer) {
    writer_ = std::move(p.writer);
  } else if (writer_) {
    writer_->reopen();
  }
  target_ = p.settings.access;
}

RequestLog::SiteCounts& RequestLog::counts_of(std::string_view site) {
  // Only this log's worker adds: a relaxed load sees its own count.
  const size_t n = site_count_.load(std::memory_order_relaxed);
  for (size_t k = 0; k < n; ++k) {
    if (sites_[k]->site == site) return *sites_[k];
  }
  if (n == kMaxSites) return *sites_[n - 1];
  sites_[n] = std::make_unique<SiteCounts>(site);
  site_count_.store(n + 1, std::memory_order_release);
  return *sites_[n];
}

void RequestLog::record(const net::RequestRecord& r, std::string_view site) {
  SiteCounts& counts = counts_of(site);
  if (r.status >= 100 && r.status < 600) ++counts.responses[static_cast<size_t>(r.status - 100)];
  counts.durations.observe(std::chrono::duration<double>(r.duration).count());
  if (!writer_) return;
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
  access::Time t;
  t.unix_seconds = us / 1'000'000;
  t.micros = static_cast<uint32_t>(us % 1'000'000);
  if (t.unix_seconds != offset_second_) {
    const auto secs = static_cast<time_t>(t.unix_seconds);
    tm local{};
    if (localtime_r(&secs, &local) != nullptr) utc_offset_ = static_cast<int32_t>(local.tm_gmtoff);
    offset_second_ = t.unix_seconds;
  }
  t.utc_offset_seconds = utc_offset_;
  const http::Request& q = r.request;
  access::Record rec;
  rec.client = r.client;
  rec.method = q.method;
  rec.target = q.target;
  rec.version_major = q.version_major;
  rec.version_minor = q.version_minor;
  rec.status = r.status;
  rec.bytes = r.body_bytes;
  rec.duration = r.duration;
  if (!q.method.empty()) {
    rec.referer = q.header("Referer").value_or("");
    rec.user_agent = q.header("User-Agent").value_or("");
  }
  rec.cache = r.cache;
  rec.site = site;
  rec.upstream = r.upstream;
  line_.clear();
  access::append(line_, format_, rec, t);
  writer_->write(line_);
}

void RequestLog::write_metrics(metrics::PrometheusWriter& w, std::string_view prefix) const {
  const RequestLog* self = this;
  write_metrics(std::span<const RequestLog* const>(&self, 1), w, prefix);
}

void RequestLog::write_metrics(std::span<const RequestLog* const> logs,
                               metrics::PrometheusWriter& w, std::string_view prefix) {
  using metrics::Type;
  const std::string responses = fmt::format("{}_responses_total", prefix);
  w.family(responses, Type::Counter, "Answers sent, by HTTP status code and site.");
  // Each site once, in the order the logs first saw them; its figures added
  // up over every log.
  std::vector<std::string_view> sites;
  for (const RequestLog* log : logs) {
    const size_t n = log->site_count_.load(std::memory_order_acquire);
    for (size_t k = 0; k < n; ++k) {
      const std::string& s = log->sites_[k]->site;
      if (std::find(sites.begin(), sites.end(), s) == sites.end()) sites.emplace_back(s);
    }
  }
  auto each = [&](std::string_view site, auto&& f) {
    for (const RequestLog* log : logs) {
      const size_t n = log->site_count_.load(std::memory_order_acquire);
      for (size_t k = 0; k < n; ++k) {
        if (log->sites_[k]->site == site) f(*log->sites_[k]);
      }
    }
  };
  for (const auto site : sites) {
    for (size_t i = 0; i < 500; ++i) {
      uint64_t n = 0;
      each(site, [&](const SiteCounts& c) { n += c.responses[i]; });
      if (n == 0) continue;
      const std::string code = std::to_string(i + 100);
      w.sample({{"code", code}, {"site", site}}, n);
    }
  }
  const std::string name = fmt::format("{}_request_duration_seconds", prefix);
  w.family(name, Type::Histogram,
           "Time from a request's head to its answer queued whole (a file: sent), by site.");
  for (const auto site : sites) {
    metrics::Histogram durations;
    each(site, [&](const SiteCounts& c) { durations.merge(c.durations); });
    w.histogram({{"site", site}}, durations);
  }
  // Before any answer: the family still shows its buckets.
  if (sites.empty()) w.histogram({{"site", kDefaultSite}}, metrics::Histogram{});
  // The workers share one access log writer: its count is everyone's.
  w.metric(fmt::format("{}_access_log_dropped_lines_total", prefix), Type::Counter,
           "Access log lines dropped because the log could not keep up.",
           logs.empty() ? 0 : logs.front()->lines_dropped());
}

AdminGate AdminGate::from(const config::AdminSettings& s) {
  AdminGate g;
  g.allow_ = admin::AllowList::parse(s.allow);
  if (!s.token_file.empty()) {
    std::ifstream in(s.token_file);
    if (!in) {
      throw std::runtime_error("[admin] token_file: cannot read " + s.token_file + ": " +
                               std::strerror(errno));
    }
    std::ostringstream text;
    text << in.rdbuf();
    g.token_ = admin::token_from_text(text.str());
    if (g.token_.empty()) {
      throw std::runtime_error("[admin] token_file: " + s.token_file + " holds no token");
    }
  }
  return g;
}

bool AdminGate::admit(net::Exchange& ex) const {
  if (allow_.allows(ex.peer_address())) return true;
  ex.reply(403, "forbidden", {{"Cache-Control", "no-store"}});
  return false;
}

bool AdminGate::token_ok(const net::Exchange& ex) const {
  const auto auth = ex.request().header("Authorization");
  if (!auth || auth->size() < 7 || !text::iequals(auth->substr(0, 7), "Bearer ")) return false;
  return admin::token_equals(text::trim_ows(auth->substr(7)), token_);
}

std::optional<purge::Request> AdminGate::admit_purge(net::Exchange& ex) const {
  if (!admit(ex)) return std::nullopt;
  if (token_.empty()) {
    ex.reply(403, "purges are refused: no [admin] token_file is configured",
             {{"Cache-Control", "no-store"}});
    return std::nullopt;
  }
  if (!token_ok(ex)) {
    ex.reply(401, "purges need Authorization: Bearer <the token of [admin] token_file>",
             {{"WWW-Authenticate", "Bearer"}, {"Cache-Control", "no-store"}});
    return std::nullopt;
  }
  const auto& req = ex.request();
  std::string error;
  auto r = purge::parse(req.target,
                        {.tag = req.header(purge::kTagHeader),
                         .soft = req.header(purge::kSoftHeader),
                         .id = req.header(purge::kIdHeader),
                         .host = req.header("Host")},
                        error);
  if (!r) ex.reply(400, error, {{"Cache-Control", "no-store"}});
  return r;
}

ObserverReload prepare_observers(const RequestLog& log, const config::LogSettings& l,
                                 const config::AdminSettings& a) {
  return {log.prepare(l), AdminGate::from(a)};
}

net::ServerStats add_up(std::span<const net::Server* const> servers) {
  net::ServerStats t;
  for (const net::Server* s : servers) {
    const auto& st = s->stats();
    t.active_connections += st.active_connections;
    t.connections_total += st.connections_total;
    t.requests_total += st.requests_total;
    t.bytes_sent += st.bytes_sent;
    t.rejected_total += st.rejected_total;
    t.errors_total += st.errors_total;
    t.backlogged_connections += st.backlogged_connections;
    t.backlogged_total += st.backlogged_total;
    t.file_bytes_copied += st.file_bytes_copied;
    t.h2_connections_total += st.h2_connections_total;
    t.h2_streams_total += st.h2_streams_total;
    t.h2_resets_total += st.h2_resets_total;
  }
  return t;
}

void write_http2_metrics(const net::ServerStats& st, metrics::PrometheusWriter& w,
                         std::string_view prefix) {
  using metrics::Type;
  w.metric(fmt::format("{}_http2_connections_total", prefix), Type::Counter,
           "Connections that spoke HTTP/2 (ALPN h2 or h2c with prior knowledge).",
           st.h2_connections_total.get());
  w.metric(fmt::format("{}_http2_streams_total", prefix), Type::Counter,
           "HTTP/2 requests (streams) handled.", st.h2_streams_total.get());
  w.metric(fmt::format("{}_http2_streams_reset_total", prefix), Type::Counter,
           "HTTP/2 streams that ended before their answer was sent whole.",
           st.h2_resets_total.get());
}

void write_worker_metrics(std::span<const net::Server* const> servers, metrics::PrometheusWriter& w,
                          std::string_view prefix) {
  using metrics::Type;
  w.family(fmt::format("{}_worker_connections_total", prefix), Type::Counter,
           "Client connections each worker accepted.");
  for (size_t i = 0; i < servers.size(); ++i) {
    w.sample({{"worker", std::to_string(i)}}, servers[i]->stats().connections_total.get());
  }
  w.family(fmt::format("{}_worker_connections_active", prefix), Type::Gauge,
           "Open client connections, by worker.");
  for (size_t i = 0; i < servers.size(); ++i) {
    w.sample({{"worker", std::to_string(i)}}, servers[i]->stats().active_connections.get());
  }
}

void send_page(net::Exchange& ex, const Page& page) {
  auto& h = ex.begin(200);
  h.header("Content-Type", "text/html; charset=utf-8");
  h.header("Content-Security-Policy", page.csp);
  h.header("Cache-Control", "no-store");
  // The page is the admin surface's: no other site may frame it or guess
  // its type.
  h.header("X-Content-Type-Options", "nosniff");
  h.header("Referrer-Policy", "no-referrer");
  h.header("Content-Length", static_cast<uint64_t>(page.html.size()));
  // Static bytes: an owner that owns nothing (aliasing an empty pointer)
  // spares the copy.
  ex.finish(page.html,
            std::shared_ptr<const void>(std::shared_ptr<const void>(), page.html.data()));
}

}  // namespace cdn::daemon
