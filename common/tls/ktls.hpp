// SPDX-License-Identifier: MIT
// kTLS: whether a TLS connection's records are written by the kernel (the
// `tls` upper layer protocol of Linux), so that file bodies still go out with
// sendfile(2), or encrypted here in bounded chunks. These are the decisions
// only, without I/O: the probe (a test socket pair and setsockopt TCP_ULP)
// and OpenSSL's part sit in common/net/tls.cc. Being pure, they are what the
// unit tests can hold on a machine without the ULP, where the kernel path
// itself cannot run.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace cdn::tls {

// [tls] ktls.
enum class KtlsSetting {
  Auto,  // use it where the kernel and OpenSSL can
  Off,   // never: file bodies are encrypted here
};

// What the process found at start (once: the answer holds for its life).
struct KtlsProbe {
  bool openssl = false;  // OpenSSL was built with kTLS (no OPENSSL_NO_KTLS)
  bool ulp = false;      // the kernel accepted setsockopt(TCP_ULP, "tls") on a test socket
  int ulp_errno = 0;     // why it did not (ENOENT: no such ULP), 0 when it did
};

// The process's mode, from the setting and the probe.
enum class KtlsMode {
  On,         // connections offer their keys to the kernel after the handshake
  Off,        // [tls] ktls = off
  NoOpenssl,  // OpenSSL cannot hand keys to the kernel
  NoUlp,      // the kernel has no tls ULP (or refused it: see ulp_errno)
};

KtlsMode ktls_mode(KtlsSetting setting, const KtlsProbe& probe);

// The start-up log line: "kTLS: on ..." or "kTLS unavailable: <why>; file
// bodies encrypted in N KiB chunks" (`chunk`: the bytes encrypted at a time).
std::string ktls_note(KtlsMode mode, const KtlsProbe& probe, size_t chunk);

// Whether Linux and OpenSSL 3 can write the records of a session that
// negotiated `version` ("TLSv1.3") and `cipher` (OpenSSL's name): TLS 1.2 and
// 1.3 with AES-GCM (128 or 256) or ChaCha20-Poly1305 (Linux 5.11 on).
bool ktls_cipher_supported(std::string_view version, std::string_view cipher);

// One connection after its handshake.
struct KtlsOutcome {
  bool kernel = false;   // its records are the kernel's: plaintext and sendfile below
  std::string_view why;  // when not: why (for the debug log)
};

// `kernel_has_keys`: OpenSSL installed the write keys in the socket
// (BIO_get_ktls_send). When it did, the kernel holds the write side whatever
// else is true, and every byte must go through it; otherwise the connection
// stays with user-space encryption.
KtlsOutcome ktls_outcome(KtlsMode mode, std::string_view version, std::string_view cipher,
                         bool kernel_has_keys);

}  // namespace cdn::tls
