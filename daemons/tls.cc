// SPDX-License-Identifier: MIT
#include "daemons/tls.hpp"

#include <spdlog/spdlog.h>

#include <stdexcept>

#include "common/net/tls.hpp"

namespace cdn::daemon {

tls::ServerConfig tls_config(const config::TlsSettings& s) {
  tls::ServerConfig c;
  for (size_t i = 0; i < s.certificates.size() && i < s.keys.size(); ++i) {
    c.certificates.push_back({s.certificates[i], s.keys[i]});
  }
  c.ocsp = s.ocsp;
  return c;
}

TlsCertificates::TlsCertificates(const config::TlsSettings& s)
    : handshake_ms_(s.handshake_timeout.count()), current_(prepare(s)) {
  spdlog::info("TLS certificates: {}; {}", current_->describe(), tls_file_path_note());
}

std::shared_ptr<const tls::ServerContext> TlsCertificates::prepare(
    const config::TlsSettings& s) const {
  auto built = tls::ServerContext::build(tls_config(s), keys_);
  if (!built.context) throw std::runtime_error("[tls]: " + built.error);
  return built.context;
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
                                                             const config::TlsSettings& next) {
  if (next.port != now.port || next.address != now.address) {
    spdlog::warn("[tls] port/address changed: takes effect at the next restart");
  }
  if (certificates == nullptr || !next.enabled()) return nullptr;
  return certificates->prepare(next);
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
