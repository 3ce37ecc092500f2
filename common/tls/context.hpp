// SPDX-License-Identifier: MIT
// TLS contexts of OpenSSL 3, built once and shared by every connection and
// every worker thread (an SSL_CTX is safe to share; each connection's SSL is
// its own). No socket here: an Engine (engine.hpp) runs one connection over
// memory.
//
// ServerContext: the certificates of [tls], each with its chain and key,
// chosen by SNI; TLS 1.2 and 1.3 with Mozilla's "intermediate" ciphers; ALPN;
// session tickets sealed with a TicketKeys ring; OCSP staples from files. A
// build either succeeds whole or returns why not (naming the file), so a
// reload that fails keeps the context in use (certificates are re-read by
// building a new context; connections hold the one they started with).
#pragma once

#include <openssl/ssl.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace cdn::tls {

// The keys that seal session tickets. One ring for the process: every
// worker's handshakes go through the same SSL_CTX, so a ticket issued by one
// worker resumes on another, and a reload keeps the ring, so tickets survive
// it. A new key seals tickets every `period`; tickets sealed by the `keep - 1`
// keys before it are still accepted (and replaced by a fresh ticket). The keys
// live only in memory: a restart forgets them, as it should.
class TicketKeys {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  static constexpr std::chrono::seconds kDefaultPeriod{3600};
  static constexpr size_t kDefaultKeep = 3;

  explicit TicketKeys(std::chrono::seconds period = kDefaultPeriod, size_t keep = kDefaultKeep,
                      Clock clock = std::chrono::steady_clock::now);

  struct Key {
    std::array<unsigned char, 16> name{};
    std::array<unsigned char, 32> aes{};
    std::array<unsigned char, 32> hmac{};
    std::chrono::steady_clock::time_point made{};
  };
  // The key that seals new tickets (rotated first when its period is over).
  Key current();
  // The key named `name`, if still kept; `newest` says whether it is the current one.
  bool find(const unsigned char* name, Key& out, bool& newest);
  // How long a ticket can still be accepted: what the contexts announce as
  // the session lifetime.
  std::chrono::seconds lifetime() const { return period_ * static_cast<long>(keep_ - 1); }

 private:
  void rotate_locked(std::chrono::steady_clock::time_point now);
  std::chrono::seconds period_;
  size_t keep_;
  Clock clock_;
  std::mutex mutex_;
  std::vector<Key> keys_;  // newest first, each younger than keep_ periods
};

// One certificate of [tls]: a PEM file with the leaf first and its chain
// after it, and the PEM private key that goes with it (ECDSA or RSA).
struct CertificateFiles {
  std::string certificate;
  std::string key;
};

struct ServerConfig {
  // The first is the default, sent to clients that name no host or a host no
  // certificate names. Certificates naming the same hosts with different key
  // types (one ECDSA, one RSA) share a context: OpenSSL picks what the client
  // supports.
  std::vector<CertificateFiles> certificates;
  // DER OCSP responses, each stapled for the certificate it answers for
  // (matched by its CertID, so no order is needed).
  std::vector<std::string> ocsp;
  // Offer h2 in ALPN (only once an HTTP/2 server exists behind it).
  bool h2 = false;
};

// The protocol ALPN chose, or None when the client offered no ALPN.
enum class Protocol { None, Http11, H2 };

class ServerContext {
 public:
  struct Built {
    std::shared_ptr<const ServerContext> context;  // null on failure
    std::string error;                             // "FILE: reason"
  };
  // Reads and checks every file; never throws.
  static Built build(const ServerConfig& config, std::shared_ptr<TicketKeys> keys);

  ~ServerContext();
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  // The context new connections start in (SNI may move them to another).
  SSL_CTX* initial() const;
  // Each certificate's subject CN, its names and key types, for the log:
  // "cdn.example [cdn.example, *.cdn.example] (ECDSA+RSA)".
  std::string describe() const;

  struct Host;  // one SSL_CTX and the names its certificates cover
  // The context whose certificate names `server_name`, else the default.
  SSL_CTX* choose(std::string_view server_name) const;
  const std::string* staple_for(const X509* leaf) const;
  bool h2() const { return h2_; }

 private:
  ServerContext() = default;
  std::vector<Host> hosts_;
  std::shared_ptr<TicketKeys> keys_;
  bool h2_ = false;
};

struct ServerContext::Host {
  SSL_CTX* ctx = nullptr;
  std::vector<std::string> names;  // DNS names (lower case, maybe "*.x"), or the CN
  std::string subject;             // the first certificate's CN
  std::vector<X509*> leaves;       // owned by ctx
  std::vector<std::pair<X509*, std::string>> staples;  // leaf -> DER OCSP response
  std::vector<int> key_types;                          // EVP_PKEY_* of its certificates
};

// The client's side: which certificates to trust.
struct ClientConfig {
  std::string ca_file;  // PEM bundle; empty: the system's store
  bool verify = true;   // false: --insecure (the caller warns)
};

class ClientContext {
 public:
  struct Built {
    std::shared_ptr<const ClientContext> context;
    std::string error;
  };
  static Built build(const ClientConfig& config);
  ~ClientContext();
  ClientContext(const ClientContext&) = delete;
  ClientContext& operator=(const ClientContext&) = delete;
  SSL_CTX* ctx() const { return ctx_; }
  bool verify() const { return verify_; }

 private:
  ClientContext() = default;
  SSL_CTX* ctx_ = nullptr;
  bool verify_ = true;
};

// The queued OpenSSL errors of this thread as one line ("" when none); clears them.
std::string take_errors();

}  // namespace cdn::tls
