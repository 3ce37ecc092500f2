// SPDX-License-Identifier: MIT
// The daemon's [tls] certificates: one tls::ServerContext shared by every
// worker's listener, and one ticket key ring for the life of the process (a
// ticket from any worker resumes on any other, before and after a reload).
// Built at start (a failure stops start-up) and again on SIGHUP: a set that
// does not load is refused with the file and the reason, and the context in
// use stays. Connections keep the context they started with.
#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "common/config/settings.hpp"
#include "common/metrics/prometheus.hpp"
#include "common/net/transport.hpp"
#include "common/tls/context.hpp"
#include "common/tls/ktls.hpp"

namespace cdn::daemon {

// A replica's [site NAME] certificate and key: offered on the [tls] port
// beside [tls]'s own (after them: [tls]'s first stays the default), chosen
// by SNI like them, re-read with them.
struct SiteCertificate {
  std::string site;  // NAME
  tls::CertificateFiles files;
};
using SiteCertificates = std::vector<SiteCertificate>;
// Every [site]'s certificate, in file order; a pair of files already in
// [tls] or in an earlier site is offered once.
SiteCertificates site_certificates(const config::ReplicaSettings& s);

tls::ServerConfig tls_config(const config::TlsSettings& s, const SiteCertificates& sites = {});

class TlsCertificates {
 public:
  // Throws std::runtime_error ("[tls]: FILE: reason", or "[site NAME]: ..."
  // for a site's file) when they do not load. Probes for kTLS (once: [tls]
  // ktls is read at start) and logs the outcome.
  explicit TlsCertificates(const config::TlsSettings& s, const SiteCertificates& sites = {});
  // The context built from `s`, not yet in use; throws as above. A reload
  // builds it before anything is applied, then install()s it.
  std::shared_ptr<const tls::ServerContext> prepare(const config::TlsSettings& s,
                                                    const SiteCertificates& sites = {}) const;
  void install(std::shared_ptr<const tls::ServerContext> next,
               std::chrono::milliseconds handshake_timeout);
  // What a new connection's handshake uses. Any thread.
  std::shared_ptr<const tls::ServerContext> current() const;
  std::chrono::milliseconds handshake_timeout() const {
    return std::chrono::milliseconds(handshake_ms_.load(std::memory_order_relaxed));
  }
  // Whether new connections offer their sessions to the kernel.
  bool ktls() const { return ktls_ == tls::KtlsMode::On; }

 private:
  tls::KtlsMode ktls_;
  std::atomic<int64_t> handshake_ms_;
  std::shared_ptr<tls::TicketKeys> keys_ = std::make_shared<tls::TicketKeys>();
  mutable std::mutex mutex_;
  std::shared_ptr<const tls::ServerContext> current_;
};

// A reload's two steps, for either daemon. prepare_tls_reload builds the
// next context before anything of the reload is applied (throws when it
// does not load: the reload is refused, naming the file); null when TLS is
// off. [tls] port and address are read at start only (a warning says so).
// install_tls_reload puts it in use and logs what it holds.
std::shared_ptr<const tls::ServerContext> prepare_tls_reload(const TlsCertificates* certificates,
                                                             const config::TlsSettings& now,
                                                             const config::TlsSettings& next,
                                                             const SiteCertificates& sites = {});
void install_tls_reload(TlsCertificates* certificates,
                        std::shared_ptr<const tls::ServerContext> next,
                        const config::TlsSettings& next_settings);

// What goes over each TCP connection accepted on a [tls] listener of the
// server on `loop`: a TLS transport with the certificates in use at accept.
net::TransportLayer tls_layer(uv_loop_t* loop, std::shared_ptr<TlsCertificates> certificates);

// The kTLS mode for [tls] ktls (`setting`: "auto" or "off") and what the
// kernel answered to `probe`, and the start-up log line that says it.
tls::KtlsMode ktls_mode(std::string_view setting, const tls::KtlsProbe& probe);
std::string ktls_note(tls::KtlsMode mode, const tls::KtlsProbe& probe);

// The process's kTLS figures: server TLS connections whose records the
// kernel writes (open, and in all) and those whose records are encrypted here.
void write_tls_metrics(metrics::PrometheusWriter& w, std::string_view prefix);

}  // namespace cdn::daemon
