// SPDX-License-Identifier: MIT
// What both daemons do with every answered request and with every request
// for an endpoint that is not content.
//
// RequestLog: fed by net::ServerOptions::on_complete; writes the access log
// line (through an access::Writer, off the loop) and counts the answer for
// /.cdn/metrics (responses by code and site, durations). One RequestLog per
// loop thread (its counters and line buffer are the loop's own); the Writer
// behind it may be shared by several (it takes lines from any thread).
//
// AdminGate: [admin] allow and token_file. The admin surface (/.cdn/status,
// /.cdn/metrics, purges, every /.cdn/ endpoint but the balancer's locate)
// answers 403 to a peer outside the allow-list: the endpoints are named in
// the documentation, so hiding them behind a 404 would protect nothing and
// mislead an operator whose list is wrong.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/access/format.hpp"
#include "common/access/writer.hpp"
#include "common/admin/allow.hpp"
#include "common/config/settings.hpp"
#include "common/metrics/prometheus.hpp"
#include "common/net/server.hpp"
#include "common/purge/purge.hpp"

namespace cdn::daemon {

// The site of [content], and of every request of a daemon without sites.
inline constexpr std::string_view kDefaultSite = "default";

class RequestLog {
 public:
  // `identifier`: the journal's SYSLOG_IDENTIFIER for access lines.
  explicit RequestLog(std::string identifier) : identifier_(std::move(identifier)) {}

  // [log] access/access_format from a reload, in two steps so that a file
  // that cannot be opened refuses the reload before anything is applied:
  // prepare() opens a new writer when the target changed (throws
  // std::runtime_error when it cannot), apply() takes it. With the same
  // target, apply() reopens the file (SIGHUP after logrotate).
  struct Prepared {
    config::LogSettings settings;
    std::shared_ptr<access::Writer> writer;  // null: keep (or none)
  };
  Prepared prepare(const config::LogSettings& s) const;
  void apply(Prepared p);
  // What another worker's log applies to write through this log's writer
  // (one writer per daemon, fed by every worker).
  Prepared shared(const config::LogSettings& s) const { return {s, writer_}; }
  void configure(const config::LogSettings& s) { apply(prepare(s)); }

  void record(const net::RequestRecord& r, std::string_view site = kDefaultSite);

  // PREFIX_responses_total{code,site} and PREFIX_request_duration_seconds{site}.
  void write_metrics(metrics::PrometheusWriter& w, std::string_view prefix) const;
  // The same, added up over every worker's log (any thread may read the
  // counters of another; the writer is shared, see prepare()).
  static void write_metrics(std::span<const RequestLog* const> logs, metrics::PrometheusWriter& w,
                            std::string_view prefix);
  uint64_t lines_dropped() const { return writer_ ? writer_->dropped_lines() : 0; }

 private:
  std::string identifier_;
  std::string target_ = "off";
  access::Format format_ = access::Format::Combined;
  std::shared_ptr<access::Writer> writer_;
  std::string line_;  // reused for every line
  // The zone's offset, looked up (localtime_r) once a second.
  int64_t offset_second_ = INT64_MIN;
  int32_t utc_offset_ = 0;
  // Answers by status code (100..599), and their durations, of one site.
  struct SiteCounts {
    explicit SiteCounts(std::string_view name) : site(name) {}
    const std::string site;
    std::array<metrics::OwnCounter, 500> responses{};
    metrics::Histogram durations;
  };
  SiteCounts& counts_of(std::string_view site);
  // Append-only, in order of first answer: this log's worker adds a site and
  // then publishes the count (release); the metrics pages, on any worker,
  // read the first site_count_ (acquire). Sites come from the configuration;
  // past kMaxSites they share the last one's counts.
  static constexpr size_t kMaxSites = 1024;
  std::array<std::unique_ptr<SiteCounts>, kMaxSites> sites_;
  std::atomic<size_t> site_count_{0};
};

class AdminGate {
 public:
  AdminGate() : allow_(admin::AllowList::loopback()) {}
  // Reads token_file; throws std::runtime_error when it is set and cannot
  // be read or holds no token (a purge surface that silently accepted no
  // token would look configured and not be).
  static AdminGate from(const config::AdminSettings& s);

  // True when the peer may use the admin surface; otherwise answers 403
  // and returns false.
  bool admit(net::Exchange& ex) const;
  // For purges: "Authorization: Bearer TOKEN" matches token_file's token.
  bool token_ok(const net::Exchange& ex) const;
  // A PURGE request: the allow-list, then a token configured (else 403
  // saying so), then the token (else 401), then the request itself (else
  // 400). Answers and returns nullopt when any fails.
  std::optional<purge::Request> admit_purge(net::Exchange& ex) const;
  // The token, for the balancer to forward purges with ("" when none).
  const std::string& token() const { return token_; }
  const admin::AllowList& allow() const { return allow_; }

 private:
  admin::AllowList allow_;
  std::string token_;
};

// What a reload of [log] access* and [admin] needs, made before anything is
// applied (it throws when a file cannot be opened or read).
struct ObserverReload {
  RequestLog::Prepared log;
  AdminGate admin;
};
// Every worker's server statistics added up (any thread may read them).
net::ServerStats add_up(std::span<const net::Server* const> servers);
// PREFIX_worker_connections_total{worker} and PREFIX_worker_connections_active{worker}:
// how the kernel spread the connections over the workers.
void write_worker_metrics(std::span<const net::Server* const> servers, metrics::PrometheusWriter& w,
                          std::string_view prefix);
// The HTTP/2 figures of `st` (connections, streams, streams cut short), as
// PREFIX_http2_*.
void write_http2_metrics(const net::ServerStats& st, metrics::PrometheusWriter& w,
                         std::string_view prefix);

ObserverReload prepare_observers(const RequestLog& log, const config::LogSettings& l,
                                 const config::AdminSettings& a);

// A page of the admin surface (/.cdn/dashboard), embedded at build time by
// daemons/embed_page.py: static bytes, and the Content-Security-Policy that
// admits its own inline script and style and nothing else.
struct Page {
  std::string_view html;
  std::string_view csp;
};
// 200 text/html with the page's policy, never stored (it shows live figures).
void send_page(net::Exchange& ex, const Page& page);

}  // namespace cdn::daemon
