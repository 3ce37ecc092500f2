// SPDX-License-Identifier: MIT
#include "daemons/tls.hpp"

#include <spdlog/spdlog.h>

#include <stdexcept>

#include "common/net/tls.hpp"

namespace cdn::daemon {

SiteCertificates site_certificates(const config::ReplicaSettings& s) {
  SiteCertificates out;
  const auto offered = [&](const std::string& cert, const std::string& key) {
    for (size_t i = 0; i < s.tls.certificates.size() && i < s.tls.keys.size(); ++i) {
      if (s.tls.certificates[i] == cert && s.tls.keys[i] == key) return true;
    }
    for (const auto& o : out) {
      if (o.files.certificate == cert && o.files.key == key) return true;
    }
    return false;
  };
  for (const auto& site : s.sites) {
    if (site.certificate.empty() || offered(site.certificate, site.key)) continue;
    out.push_back({site.name, {site.certificate, site.key}});
  }
  return out;
}

tls::ServerConfig tls_config(const config::TlsSettings& s, const SiteCertificates& sites) {
  tls::ServerConfig c;
  for (size_t i = 0; i < s.certificates.size() && i < s.keys.size(); ++i) {
    c.certificates.push_back({s.certificates[i], s.keys[i]});
  }
  for (const auto& site : sites) c.certificates.push_back(site.files);
  c.ocsp = s.ocsp;
  c.h2 = true;  // both daemons serve HTTP/2 (common/net/h2_link.hpp)
  return c;
}

TlsCertificates::TlsCertificates(const config::TlsSettings& s, const SiteCertificates& sites)
    : handshake_ms_(s.handshake_timeout.count()), current_(prepare(s, sites)) {
  spdlog::info("TLS certificates: {}", current_->describe());
  // Probed only when wanted: "off" leaves the kernel alone.
  const tls::KtlsProbe probe = s.ktls == "off" ? tls::KtlsProbe{} : net::TlsTransport::probe_ktls();
  ktls_ = ktls_mode(s.ktls, probe);
  spdlog::info("{}", ktls_note(ktls_, probe));
}

std::shared_ptr<const tls::ServerContext> TlsCertificates::prepare(
    const config::TlsSettings& s, const SiteCertificates& sites) const {
  auto built = tls::ServerContext::build(tls_config(s, sites), keys_);
  if (built.context) return built.context;
  // The build's errors start with the file they are about: a site's file
  // is named with its section.
  for (const auto& site : sites) {
    for (const std::string* file : {&site.files.certificate, &site.files.key}) {
      if (built.error.starts_with(*file + ":")) {
        throw std::runtime_error("[site " + site.site + "]: " + built.error);
      }
    }
  }
  throw std::runtime_error("[tls]: " + built.error);
}

void TlsCertificates::install(std::shared_ptr<const tls::ServerContext> next,
                              std::chrono::milliseconds handshake_timeout) {
  handshake_ms_.store(handshake_timeout.count(), std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  current_.swap(next);
  // The old context goes when its last connection does (outside the lock).
}

std::shared_ptr<const tls::ServerContext> TlsCertificates::current() const {
  std::lock_guard lock(mutex_);
  return current_;
}

std::shared_ptr<const tls::ServerContext> prepare_tls_reload(const TlsCertificates* certificates,
                                                             const config::TlsSettings& now,
                                                             const config::TlsSettings& next,
                                                             const SiteCertificates& sites) {
  if (next.port != now.port || next.address != now.address) {
    spdlog::warn("[tls] port/address changed: takes effect at the next restart");
  }
  if (next.ktls != now.ktls) spdlog::warn("[tls] ktls changed: takes effect at the next restart");
  if (certificates == nullptr || !next.enabled()) return nullptr;
  return certificates->prepare(next, sites);
}

void install_tls_reload(TlsCertificates* certificates,
                        std::shared_ptr<const tls::ServerContext> next,
                        const config::TlsSettings& next_settings) {
  if (certificates == nullptr || !next) return;
  spdlog::info("TLS certificates: {} (new handshakes use them)", next->describe());
  certificates->install(std::move(next), next_settings.handshake_timeout);
}

net::TransportLayer tls_layer(uv_loop_t* loop, std::shared_ptr<TlsCertificates> certificates) {
  return [loop, certificates = std::move(certificates)](net::Transport::Ptr below) {
    return net::TlsTransport::server(loop, std::move(below), certificates->current(),
                                     certificates->handshake_timeout(), certificates->ktls());
  };
}

tls::KtlsMode ktls_mode(std::string_view setting, const tls::KtlsProbe& probe) {
  return tls::ktls_mode(setting == "off" ? tls::KtlsSetting::Off : tls::KtlsSetting::Auto, probe);
}

std::string ktls_note(tls::KtlsMode mode, const tls::KtlsProbe& probe) {
  return tls::ktls_note(mode, probe, net::TlsTransport::kFileChunk);
}

void write_tls_metrics(metrics::PrometheusWriter& w, std::string_view prefix) {
  using metrics::Type;
  const auto& c = net::TlsTransport::ktls_counts();
  w.metric(fmt::format("{}_ktls_connections", prefix), Type::Gauge,
           "Open TLS connections whose records the kernel writes (kTLS: files go by sendfile).",
           c.kernel_open.load(std::memory_order_relaxed));
  w.metric(fmt::format("{}_ktls_connections_total", prefix), Type::Counter,
           "TLS handshakes after which the kernel took the session (kTLS).",
           c.kernel_total.load(std::memory_order_relaxed));
  w.metric(fmt::format("{}_tls_userspace_connections_total", prefix), Type::Counter,
           "TLS handshakes after which records are encrypted in user space (no kTLS).",
           c.user_total.load(std::memory_order_relaxed));
}

}  // namespace cdn::daemon
