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
  spdlog::info("TLS certificates: {}; {}", current_->describe(), tls_file_path_note());
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
                                     certificates->handshake_timeout());
  };
}

std::string tls_file_path_note() {
  // Without the tls ULP the kernel cannot encrypt: file bodies are read in
  // bounded chunks and encrypted here. With it, the same (handing sessions
  // to the kernel is not done yet).
  return net::TlsTransport::ktls_offered()
             ? "the kernel offers kTLS (tls ULP), unused: file bodies over TLS are encrypted "
               "in user space, 64 KiB at a time"
             : "no kTLS (the kernel offers no tls ULP): file bodies over TLS are encrypted in "
               "user space, 64 KiB at a time";
}

}  // namespace cdn::daemon
