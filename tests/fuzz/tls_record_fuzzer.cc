// SPDX-License-Identifier: MIT
// The TLS record path of a server Engine (common/tls/engine.hpp) fed what a
// client might send before and during the handshake: whole, in two pieces
// and byte by byte. Whatever the bytes, the engine must not crash, must end
// in the same state all three ways (the record layer decides on bytes, not
// on how they were cut), and must hold back no more than one record before
// it makes its SSL. The certificate is made in memory at start.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "common/tls/context.hpp"
#include "common/tls/engine.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace {

// A self-signed P-256 certificate and key in PEM files under /tmp, loaded
// into a ServerContext once per process.
std::shared_ptr<const cdn::tls::ServerContext> make_context() {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* x = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("fuzz.test"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509_sign(x, key, EVP_sha256());
  char cert_path[] = "/tmp/cdn-tls-fuzz-cert-XXXXXX";
  char key_path[] = "/tmp/cdn-tls-fuzz-key-XXXXXX";
  FILE* c = fdopen(mkstemp(cert_path), "w");
  FILE* k = fdopen(mkstemp(key_path), "w");
  PEM_write_X509(c, x);
  PEM_write_PrivateKey(k, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(c);
  std::fclose(k);
  X509_free(x);
  EVP_PKEY_free(key);
  cdn::tls::ServerConfig config;
  config.certificates.push_back({cert_path, key_path});
  auto built = cdn::tls::ServerContext::build(config, nullptr);
  ::unlink(cert_path);
  ::unlink(key_path);
  if (!built.context) cdn::fuzz::violated(built.error.c_str());
  return built.context;
}

const std::shared_ptr<const cdn::tls::ServerContext>& context() {
  static const auto ctx = make_context();
  return ctx;
}

using State = cdn::tls::Engine::State;

State feed(std::string_view in, size_t piece) {
  cdn::tls::Engine e = cdn::tls::Engine::server(context());
  std::string out;
  for (size_t at = 0; at < in.size() && e.state() == State::Handshaking; at += piece) {
    e.receive(in.substr(at, piece));
    // Before its SSL exists the engine holds the bytes of one record at most.
    if (e.ssl() == nullptr) CDN_FUZZ_CHECK(at + piece <= 5 + 16384 + 2048 + piece);
    e.take_output(out);
  }
  return e.state();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = cdn::fuzz::as_view(data, size);
  if (in.size() > 64 * 1024) return 0;
  const State whole = feed(in, in.size() + 1);
  const size_t cut = cdn::fuzz::split_point(in);
  cdn::tls::Engine two = cdn::tls::Engine::server(context());
  two.receive(in.substr(0, cut));
  if (two.state() == State::Handshaking) two.receive(in.substr(cut));
  CDN_FUZZ_CHECK(two.state() == whole);
  if (in.size() <= 4096) CDN_FUZZ_CHECK(feed(in, 1) == whole);
  return 0;
}
