// SPDX-License-Identifier: MIT
#include "common/tls/context.hpp"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace cdn::tls {

namespace {

// Mozilla's "intermediate" profile (server side TLS guidelines 5.7): TLS 1.2
// with forward secrecy and AEAD only; TLS 1.3's own suites are all good.
constexpr const char* kCiphers12 =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";
constexpr const char* kGroups = "X25519:P-256:P-384";

// The ServerContext of an SSL_CTX (for the SNI, status and ticket callbacks).
int context_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

const ServerContext* owner_of(SSL* ssl) {
  return static_cast<const ServerContext*>(
      SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), context_index()));
}

int keys_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

struct Bio {
  BIO* b;
  ~Bio() { BIO_free(b); }
};

// The whole file, or false with why not.
bool read_file(const std::string& path, std::string& out, std::string& why) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    why = path + ": cannot be read (" + std::strerror(errno) + ")";
    return false;
  }
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) {
    why = path + ": cannot be read";
    return false;
  }
  out = std::move(s).str();
  return true;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// The DNS names a certificate is for (its subjectAltName, else its CN).
std::vector<std::string> names_of(X509* x) {
  std::vector<std::string> out;
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
  if (sans != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* g = sk_GENERAL_NAME_value(sans, i);
      if (g->type != GEN_DNS) continue;
      const auto* d = g->d.dNSName;
      out.push_back(lower(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(d)),
                                      static_cast<size_t>(ASN1_STRING_length(d)))));
    }
    GENERAL_NAMES_free(sans);
  }
  if (out.empty()) {
    char cn[256] = {};
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn) > 0) {
      out.push_back(lower(cn));
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// RFC 6125: a '*' stands for one whole left-most label.
bool name_matches(std::string_view pattern, std::string_view host) {
  if (pattern == host) return true;
  if (pattern.size() > 2 && pattern.substr(0, 2) == "*.") {
    const size_t dot = host.find('.');
    return dot != std::string_view::npos && dot > 0 && host.substr(dot) == pattern.substr(1);
  }
  return false;
}

std::string key_type_name(int t) {
  switch (t) {
    case EVP_PKEY_RSA:
      return "RSA";
    case EVP_PKEY_EC:
      return "ECDSA";
    case EVP_PKEY_ED25519:
      return "Ed25519";
    default:
      return "key type " + std::to_string(t);
  }
}

int on_server_name(SSL* ssl, int* /*alert*/, void* /*arg*/) {
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == nullptr) return SSL_TLSEXT_ERR_NOACK;
  const ServerContext* owner = owner_of(ssl);
  if (owner == nullptr) return SSL_TLSEXT_ERR_NOACK;
  SSL_CTX* chosen = owner->choose(name);
  if (chosen != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, chosen);
  return SSL_TLSEXT_ERR_OK;
}

int on_alpn(SSL* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
            unsigned int inlen, void* /*arg*/) {
  const ServerContext* owner = owner_of(ssl);
  static const unsigned char kH2[] = "\x02h2";
  static const unsigned char kH11[] = "\x08http/1.1";
  // Our preference, not the client's: h2 when it is served.
  if (owner != nullptr && owner->h2()) {
    unsigned char* o = nullptr;
    if (SSL_select_next_proto(&o, outlen, kH2, 3, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
      *out = o;
      return SSL_TLSEXT_ERR_OK;
    }
  }
  unsigned char* o = nullptr;
  if (SSL_select_next_proto(&o, outlen, kH11, 9, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
    *out = o;
    return SSL_TLSEXT_ERR_OK;
  }
  // A client that offers only protocols we do not speak is refused: RFC 7301 §3.2.
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

int on_status(SSL* ssl, void* /*arg*/) {
  const ServerContext* owner = owner_of(ssl);
  if (owner == nullptr) return SSL_TLSEXT_ERR_NOACK;
  const std::string* der = owner->staple_for(SSL_get_certificate(ssl));
  if (der == nullptr) return SSL_TLSEXT_ERR_NOACK;
  auto* copy = static_cast<unsigned char*>(OPENSSL_malloc(der->size()));
  if (copy == nullptr) return SSL_TLSEXT_ERR_NOACK;
  std::copy_n(der->data(), der->size(), copy);  // DER: bytes, no terminator
  SSL_set_tlsext_status_ocsp_resp(ssl, copy, static_cast<long>(der->size()));
  return SSL_TLSEXT_ERR_OK;
}

int on_ticket_key(SSL* ssl, unsigned char key_name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx,
                  EVP_MAC_CTX* hctx, int enc) {
  auto* keys = static_cast<TicketKeys*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), keys_index()));
  if (keys == nullptr) return -1;
  TicketKeys::Key k;
  bool newest = true;
  if (enc == 1) {
    k = keys->current();
    if (RAND_bytes(iv, 16) != 1) return -1;
    std::memcpy(key_name, k.name.data(), k.name.size());
  } else if (!keys->find(key_name, k, newest)) {
    return 0;  // unknown or expired key: a full handshake
  }
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac.data(), k.hmac.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end()};
  if (EVP_MAC_CTX_set_params(hctx, params) != 1) return -1;
  const int ok = enc == 1 ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k.aes.data(), iv)
                          : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k.aes.data(), iv);
  if (ok != 1) return -1;
  if (enc == 1) return 1;
  // 2: accepted, and a new ticket goes out after the handshake. TLS 1.3
  // clients use a ticket once (RFC 8446 C.4), and OpenSSL's server sends
  // none on a resumption unless asked: without one, every resumed
  // connection would make the next a full handshake. TLS 1.2 tickets are
  // renewed when their key is no longer the newest.
  return SSL_version(ssl) >= TLS1_3_VERSION || !newest ? 2 : 1;
}

bool load_pem_chain(const std::string& path, std::vector<X509*>& chain, std::string& why) {
  std::string text;
  if (!read_file(path, text, why)) return false;
  Bio bio{BIO_new_mem_buf(text.data(), static_cast<int>(text.size()))};
  ERR_clear_error();
  while (X509* x = PEM_read_bio_X509(bio.b, nullptr, nullptr, nullptr)) chain.push_back(x);
  const unsigned long e = ERR_peek_last_error();
  ERR_clear_error();
  if (chain.empty()) {
    why = path + ": no PEM certificate in it";
    return false;
  }
  // The end of the file is PEM_R_NO_START_LINE; anything else is a broken block.
  if (e != 0 && ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
    why = path + ": a certificate in it is broken (" + ERR_reason_error_string(e) + ")";
    return false;
  }
  return true;
}

EVP_PKEY* load_key(const std::string& path, std::string& why) {
  std::string text;
  if (!read_file(path, text, why)) return nullptr;
  Bio bio{BIO_new_mem_buf(text.data(), static_cast<int>(text.size()))};
  ERR_clear_error();
  // No passphrase callback: an encrypted key cannot be used by a daemon.
  EVP_PKEY* key = PEM_read_bio_PrivateKey(
      bio.b, nullptr, [](char*, int, int, void*) { return 0; }, nullptr);
  if (key == nullptr) why = path + ": no usable PEM private key in it (" + take_errors() + ")";
  return key;
}

SSL_CTX* new_server_ctx(std::string& why) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) {
    why = "cannot make a TLS context (" + take_errors() + ")";
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  if (SSL_CTX_set_cipher_list(ctx, kCiphers12) != 1 ||
      SSL_CTX_set1_groups_list(ctx, kGroups) != 1) {
    why = "cannot set the cipher profile (" + take_errors() + ")";
    SSL_CTX_free(ctx);
    return nullptr;
  }
  SSL_CTX_set_dh_auto(ctx, 1);
  // Memory BIOs: a record may be written in pieces, and a buffer may move.
  // The chain sent is the certificate file's, as written: without
  // NO_AUTO_CHAIN, OpenSSL would build one from its store at every
  // handshake whose file holds the leaf alone (a verification's worth of
  // allocations and locks each time).
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN);
  // Tickets only: a session cache would be per process and per worker's
  // luck; a ticket resumes on whichever worker the kernel picks.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 1);
  SSL_CTX_set_tlsext_servername_callback(ctx, on_server_name);
  SSL_CTX_set_alpn_select_cb(ctx, on_alpn, nullptr);
  SSL_CTX_set_tlsext_status_cb(ctx, on_status);
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
  return ctx;
}

}  // namespace

std::string take_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    const char* reason = ERR_reason_error_string(e);
    if (!out.empty()) out += "; ";
    out += reason != nullptr ? reason : buf;
  }
  return out;
}

// ---- TicketKeys ----

TicketKeys::TicketKeys(std::chrono::seconds period, size_t keep, Clock clock)
    : period_(period), keep_(std::max<size_t>(keep, 1)), clock_(std::move(clock)) {}

void TicketKeys::rotate_locked(std::chrono::steady_clock::time_point now) {
  // A key is kept for keep_ periods from its making, whether or not
  // handshakes came in between (an idle process wakes with none).
  std::erase_if(keys_, [&](const Key& k) { return now - k.made >= period_ * keep_; });
  if (!keys_.empty() && now - keys_.front().made < period_) return;
  Key k;
  if (RAND_bytes(k.name.data(), k.name.size()) != 1 ||
      RAND_bytes(k.aes.data(), k.aes.size()) != 1 ||
      RAND_bytes(k.hmac.data(), k.hmac.size()) != 1) {
    return;  // keep the keys we have; RAND_bytes fails only without entropy
  }
  k.made = now;
  keys_.insert(keys_.begin(), k);
}

TicketKeys::Key TicketKeys::current() {
  std::lock_guard lock(mutex_);
  rotate_locked(clock_());
  return keys_.empty() ? Key{} : keys_.front();
}

bool TicketKeys::find(const unsigned char* name, Key& out, bool& newest) {
  std::lock_guard lock(mutex_);
  rotate_locked(clock_());
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (std::memcmp(keys_[i].name.data(), name, keys_[i].name.size()) == 0) {
      out = keys_[i];
      newest = i == 0;
      return true;
    }
  }
  return false;
}

// ---- ServerContext ----

ServerContext::~ServerContext() {
  for (auto& h : hosts_) SSL_CTX_free(h.ctx);
}

SSL_CTX* ServerContext::initial() const { return hosts_.front().ctx; }

SSL_CTX* ServerContext::choose(std::string_view server_name) const {
  const std::string name = lower(std::string(server_name));
  for (const auto& h : hosts_) {
    for (const auto& n : h.names) {
      if (name_matches(n, name)) return h.ctx;
    }
  }
  return hosts_.front().ctx;
}

const std::string* ServerContext::staple_for(const X509* leaf) const {
  for (const auto& h : hosts_) {
    for (const auto& [x, der] : h.staples) {
      if (x == leaf) return &der;
    }
  }
  return nullptr;
}

std::string ServerContext::describe() const {
  std::string out;
  for (const auto& h : hosts_) {
    if (!out.empty()) out += ", ";
    out += h.subject.empty() ? "(no CN)" : h.subject;
    out += " [";
    for (size_t i = 0; i < h.names.size(); ++i) out += (i == 0 ? "" : ", ") + h.names[i];
    out += "] (";
    for (size_t i = 0; i < h.key_types.size(); ++i)
      out += (i == 0 ? "" : "+") + key_type_name(h.key_types[i]);
    out += ")";
  }
  return out;
}

ServerContext::Built ServerContext::build(const ServerConfig& config,
                                          std::shared_ptr<TicketKeys> keys) {
  Built out;
  if (config.certificates.empty()) {
    out.error = "no certificate ([tls] certificate and key)";
    return out;
  }
  std::shared_ptr<ServerContext> self(new ServerContext());
  self->keys_ = keys ? std::move(keys) : std::make_shared<TicketKeys>();
  self->h2_ = config.h2;
  // Each certificate's host index and issuer (the next in its chain, if
  // any, a reference of our own), for OCSP; freed on every way out.
  struct Issuers {
    std::vector<std::pair<size_t, X509*>> list;
    ~Issuers() {
      for (auto& [i, x] : list) X509_free(x);
    }
  } issuers_held;
  auto& issuers = issuers_held.list;
  for (const auto& files : config.certificates) {
    std::vector<X509*> chain;
    std::string why;
    const auto free_chain = [&] {
      for (X509* x : chain) X509_free(x);
    };
    if (!load_pem_chain(files.certificate, chain, why)) {
      free_chain();
      out.error = why;
      return out;
    }
    EVP_PKEY* key = load_key(files.key, why);
    if (key == nullptr) {
      free_chain();
      out.error = why;
      return out;
    }
    ERR_clear_error();
    if (X509_check_private_key(chain.front(), key) != 1) {
      ERR_clear_error();
      free_chain();
      EVP_PKEY_free(key);
      out.error = files.key + ": does not match the certificate " + files.certificate;
      return out;
    }
    const int type = EVP_PKEY_get_base_id(key);
    std::vector<std::string> names = names_of(chain.front());
    Host* host = nullptr;
    for (auto& h : self->hosts_) {
      if (h.names == names) host = &h;
    }
    if (host != nullptr &&
        std::find(host->key_types.begin(), host->key_types.end(), type) != host->key_types.end()) {
      free_chain();
      EVP_PKEY_free(key);
      out.error = files.certificate + ": names the same hosts with the same key type (" +
                  key_type_name(type) + ") as an earlier certificate; it would never be chosen";
      return out;
    }
    if (host == nullptr) {
      SSL_CTX* ctx = new_server_ctx(why);
      if (ctx == nullptr) {
        free_chain();
        EVP_PKEY_free(key);
        out.error = why;
        return out;
      }
      char cn[256] = {};
      X509_NAME_get_text_by_NID(X509_get_subject_name(chain.front()), NID_commonName, cn,
                                sizeof cn);
      self->hosts_.push_back(Host{ctx, names, cn, {}, {}, {}});
      host = &self->hosts_.back();
      SSL_CTX_set_ex_data(ctx, context_index(), self.get());
      SSL_CTX_set_ex_data(ctx, keys_index(), self->keys_.get());
      const auto lifetime = self->keys_->lifetime().count();
      SSL_CTX_set_timeout(ctx, lifetime > 0 ? lifetime : 7200);
      // Session ids from one context must not resume in another (SNI).
      static const unsigned char kSid[] = "cdn";
      SSL_CTX_set_session_id_context(ctx, kSid, sizeof kSid - 1);
    }
    ERR_clear_error();
    bool ok = SSL_CTX_use_certificate(host->ctx, chain.front()) == 1 &&
              SSL_CTX_use_PrivateKey(host->ctx, key) == 1;
    for (size_t i = 1; ok && i < chain.size(); ++i) {
      ok = SSL_CTX_add1_chain_cert(host->ctx, chain[i]) == 1;
    }
    if (ok) {
      host->leaves.push_back(chain.front());
      host->key_types.push_back(type);
      if (chain.size() > 1) {
        X509_up_ref(chain[1]);
        issuers.emplace_back(static_cast<size_t>(host - self->hosts_.data()), chain[1]);
      } else {
        issuers.emplace_back(static_cast<size_t>(host - self->hosts_.data()), nullptr);
      }
    }
    // The context holds its own references now.
    const std::string errors = ok ? "" : take_errors();
    free_chain();
    EVP_PKEY_free(key);
    if (!ok) {
      out.error = files.certificate + ": cannot be used (" + errors + ")";
      return out;
    }
  }
  // The leaves of the context, after the fact: SSL_CTX_use_certificate keeps
  // its own reference, which is what SSL_get_certificate returns.
  for (auto& h : self->hosts_) {
    h.leaves.clear();
    for (int r = SSL_CTX_set_current_cert(h.ctx, SSL_CERT_SET_FIRST); r == 1;
         r = SSL_CTX_set_current_cert(h.ctx, SSL_CERT_SET_NEXT)) {
      if (X509* x = SSL_CTX_get0_certificate(h.ctx)) h.leaves.push_back(x);
    }
  }
  std::string ocsp_error;
  for (const auto& path : config.ocsp) {
    std::string der;
    if (!read_file(path, der, ocsp_error)) break;
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    OCSP_RESPONSE* resp = d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der.size()));
    if (resp == nullptr) {
      ocsp_error = path + ": not a DER OCSP response";
      break;
    }
    OCSP_BASICRESP* basic = OCSP_response_status(resp) == OCSP_RESPONSE_STATUS_SUCCESSFUL
                                ? OCSP_response_get1_basic(resp)
                                : nullptr;
    OCSP_RESPONSE_free(resp);
    if (basic == nullptr) {
      ocsp_error = path + ": not a successful OCSP response";
      break;
    }
    bool matched = false;
    for (auto& [index, issuer] : issuers) {
      if (issuer == nullptr) continue;
      Host& h = self->hosts_[index];
      for (X509* leaf : h.leaves) {
        OCSP_CERTID* id = OCSP_cert_to_id(nullptr, leaf, issuer);
        int status = 0;
        int reason = 0;
        ASN1_GENERALIZEDTIME* this_update = nullptr;
        ASN1_GENERALIZEDTIME* next_update = nullptr;
        const bool found =
            id != nullptr && OCSP_resp_find_status(basic, id, &status, &reason, nullptr,
                                                   &this_update, &next_update) == 1;
        OCSP_CERTID_free(id);
        if (!found) continue;
        if (status != V_OCSP_CERTSTATUS_GOOD) {
          ocsp_error = path + ": the certificate is not good in it (revoked or unknown)";
        } else if (OCSP_check_validity(this_update, next_update, 300, -1) != 1) {
          ocsp_error = path + ": out of date (its nextUpdate has passed)";
        } else {
          h.staples.emplace_back(leaf, der);
          matched = true;
        }
      }
    }
    OCSP_BASICRESP_free(basic);
    ERR_clear_error();
    if (!ocsp_error.empty()) break;
    if (!matched) {
      ocsp_error =
          path + ": answers for none of the certificates (or their issuer is not in the chain)";
      break;
    }
  }
  if (!ocsp_error.empty()) {
    out.error = ocsp_error;
    return out;
  }
  out.context = std::move(self);
  return out;
}

// ---- ClientContext ----

ClientContext::~ClientContext() { SSL_CTX_free(ctx_); }

ClientContext::Built ClientContext::build(const ClientConfig& config) {
  Built out;
  std::shared_ptr<ClientContext> self(new ClientContext());
  self->ctx_ = SSL_CTX_new(TLS_client_method());
  if (self->ctx_ == nullptr) {
    out.error = "cannot make a TLS context (" + take_errors() + ")";
    return out;
  }
  self->verify_ = config.verify;
  SSL_CTX* ctx = self->ctx_;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_verify(ctx, config.verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  ERR_clear_error();
  if (!config.ca_file.empty()) {
    std::string text;
    std::string why;
    if (!read_file(config.ca_file, text, why)) {
      out.error = why;
      return out;
    }
    if (SSL_CTX_load_verify_locations(ctx, config.ca_file.c_str(), nullptr) != 1) {
      out.error = config.ca_file + ": no PEM certificate in it (" + take_errors() + ")";
      return out;
    }
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    out.error = "cannot load the system's certificate store (" + take_errors() + ")";
    return out;
  }
  static const unsigned char kAlpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof kAlpn - 1);
  out.context = std::move(self);
  return out;
}

}  // namespace cdn::tls
