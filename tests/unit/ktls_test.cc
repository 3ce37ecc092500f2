// SPDX-License-Identifier: MIT
// kTLS's pure decisions (common/tls/ktls.hpp): the process's mode from the
// setting and what the probe found, the start-up line, which sessions the
// kernel can take, and the path a connection takes after its handshake.
// The kernel path itself needs the tls ULP, which the test machines lack:
// these are what stands for it here (docs/architecture.md says so).
#include "common/tls/ktls.hpp"

#include <gtest/gtest.h>

#include <cerrno>

namespace cdn::tls {
namespace {

constexpr KtlsProbe kEverything{.openssl = true, .ulp = true, .ulp_errno = 0};
constexpr KtlsProbe kNoUlp{.openssl = true, .ulp = false, .ulp_errno = ENOENT};

TEST(KtlsMode, OnOnlyWhenAskedAndBothOpensslAndTheKernelCan) {
  EXPECT_EQ(ktls_mode(KtlsSetting::Auto, kEverything), KtlsMode::On);
  EXPECT_EQ(ktls_mode(KtlsSetting::Off, kEverything), KtlsMode::Off);
  EXPECT_EQ(ktls_mode(KtlsSetting::Auto, kNoUlp), KtlsMode::NoUlp);
  EXPECT_EQ(ktls_mode(KtlsSetting::Off, kNoUlp), KtlsMode::Off);  // off says off, not why
  EXPECT_EQ(ktls_mode(KtlsSetting::Auto, KtlsProbe{.openssl = false, .ulp = true}),
            KtlsMode::NoOpenssl);
  EXPECT_EQ(ktls_mode(KtlsSetting::Auto, KtlsProbe{}), KtlsMode::NoOpenssl);
}

TEST(KtlsNote, SaysWhichAndTheChunkSize) {
  EXPECT_EQ(ktls_note(KtlsMode::NoUlp, kNoUlp, 64 * 1024),
            "kTLS unavailable: no tls ULP in the kernel; file bodies encrypted in 64 KiB chunks");
  EXPECT_EQ(ktls_note(KtlsMode::NoUlp, KtlsProbe{.openssl = true, .ulp_errno = EPERM}, 16384),
            "kTLS unavailable: the kernel refused the tls ULP (Operation not permitted); file "
            "bodies encrypted in 16 KiB chunks");
  EXPECT_EQ(ktls_note(KtlsMode::Off, kEverything, 64 * 1024),
            "kTLS: off ([tls] ktls = off); file bodies encrypted in 64 KiB chunks");
  EXPECT_EQ(ktls_note(KtlsMode::NoOpenssl, KtlsProbe{}, 64 * 1024),
            "kTLS unavailable: OpenSSL was built without it; file bodies encrypted in 64 KiB "
            "chunks");
  const std::string on = ktls_note(KtlsMode::On, kEverything, 64 * 1024);
  EXPECT_EQ(on.rfind("kTLS: on", 0), 0u) << on;
  EXPECT_NE(on.find("sendfile"), std::string::npos) << on;
}

TEST(KtlsCipher, AesGcmAndChachaOfTls12And13) {
  for (const char* c :
       {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}) {
    EXPECT_TRUE(ktls_cipher_supported("TLSv1.3", c)) << c;
  }
  for (const char* c : {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                        "ECDHE-RSA-CHACHA20-POLY1305", "DHE-RSA-AES128-GCM-SHA256"}) {
    EXPECT_TRUE(ktls_cipher_supported("TLSv1.2", c)) << c;
  }
  EXPECT_FALSE(ktls_cipher_supported("TLSv1.3", "TLS_AES_128_CCM_SHA256"));
  EXPECT_FALSE(ktls_cipher_supported("TLSv1.2", "ECDHE-RSA-AES128-SHA256"));  // CBC
  EXPECT_FALSE(ktls_cipher_supported("TLSv1.1", "ECDHE-RSA-AES128-GCM-SHA256"));
  EXPECT_FALSE(ktls_cipher_supported("", ""));
}

TEST(KtlsOutcome, TheKernelsKeysDecideAndOtherwiseTheReasonIsGiven) {
  // Once the kernel holds the write keys, every byte must go through it.
  EXPECT_TRUE(ktls_outcome(KtlsMode::On, "TLSv1.3", "TLS_AES_128_GCM_SHA256", true).kernel);
  EXPECT_TRUE(ktls_outcome(KtlsMode::Off, "", "", true).kernel);
  const auto off = ktls_outcome(KtlsMode::NoUlp, "TLSv1.3", "TLS_AES_128_GCM_SHA256", false);
  EXPECT_FALSE(off.kernel);
  EXPECT_EQ(off.why, "kTLS is not on in this process");
  const auto ccm = ktls_outcome(KtlsMode::On, "TLSv1.3", "TLS_AES_128_CCM_SHA256", false);
  EXPECT_FALSE(ccm.kernel);
  EXPECT_EQ(ccm.why, "the kernel does not take this version and cipher");
  const auto refused = ktls_outcome(KtlsMode::On, "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", false);
  EXPECT_FALSE(refused.kernel);
  EXPECT_EQ(refused.why, "the kernel refused the session's keys");
}

}  // namespace
}  // namespace cdn::tls
