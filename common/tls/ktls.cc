// SPDX-License-Identifier: MIT
#include "common/tls/ktls.hpp"

#include <cerrno>
#include <cstring>

namespace cdn::tls {

KtlsMode ktls_mode(KtlsSetting setting, const KtlsProbe& probe) {
  if (setting == KtlsSetting::Off) return KtlsMode::Off;
  if (!probe.openssl) return KtlsMode::NoOpenssl;
  if (!probe.ulp) return KtlsMode::NoUlp;
  return KtlsMode::On;
}

std::string ktls_note(KtlsMode mode, const KtlsProbe& probe, size_t chunk) {
  const std::string chunks =
      "; file bodies encrypted in " + std::to_string(chunk / 1024) + " KiB chunks";
  switch (mode) {
    case KtlsMode::On:
      return "kTLS: on (sessions with AES-GCM or ChaCha20-Poly1305 are handed to the kernel, "
             "file bodies go out with sendfile; others: file bodies encrypted in " +
             std::to_string(chunk / 1024) + " KiB chunks)";
    case KtlsMode::Off:
      return "kTLS: off ([tls] ktls = off)" + chunks;
    case KtlsMode::NoOpenssl:
      return "kTLS unavailable: OpenSSL was built without it" + chunks;
    case KtlsMode::NoUlp:
      if (probe.ulp_errno == 0 || probe.ulp_errno == ENOENT) {
        return "kTLS unavailable: no tls ULP in the kernel" + chunks;
      }
      return "kTLS unavailable: the kernel refused the tls ULP (" +
             std::string(std::strerror(probe.ulp_errno)) + ")" + chunks;
  }
  return "kTLS: ?";
}

bool ktls_cipher_supported(std::string_view version, std::string_view cipher) {
  if (version != "TLSv1.2" && version != "TLSv1.3") return false;
  const auto has = [&](std::string_view part) {
    return cipher.find(part) != std::string_view::npos;
  };
  // TLS 1.3: TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384,
  // TLS_CHACHA20_POLY1305_SHA256; TLS 1.2: ECDHE-ECDSA-AES128-GCM-SHA256,
  // ECDHE-RSA-CHACHA20-POLY1305... (AES-CCM and CBC suites stay here).
  const bool gcm =
      has("AES128-GCM") || has("AES256-GCM") || has("AES_128_GCM") || has("AES_256_GCM");
  return gcm || has("CHACHA20");
}

KtlsOutcome ktls_outcome(KtlsMode mode, std::string_view version, std::string_view cipher,
                         bool kernel_has_keys) {
  if (kernel_has_keys) return {.kernel = true, .why = {}};
  if (mode != KtlsMode::On) return {.kernel = false, .why = "kTLS is not on in this process"};
  if (!ktls_cipher_supported(version, cipher)) {
    return {.kernel = false, .why = "the kernel does not take this version and cipher"};
  }
  return {.kernel = false, .why = "the kernel refused the session's keys"};
}

}  // namespace cdn::tls
