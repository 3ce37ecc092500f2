// SPDX-License-Identifier: MIT
// The one-shot functions are deprecated in OpenSSL 3 in favour of EVP, but
// they stay in 3.x; see sha256.hpp for why they are used here.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "client/sha256.hpp"

#include <openssl/sha.h>

namespace cdn::get {

Sha256::Sha256() : ctx_(std::make_unique<SHA256state_st>()) { reset(); }
Sha256::~Sha256() = default;

void Sha256::reset() { SHA256_Init(ctx_.get()); }

void Sha256::update(std::string_view bytes) {
  SHA256_Update(ctx_.get(), bytes.data(), bytes.size());
}

std::array<unsigned char, Sha256::kSize> Sha256::finish() {
  static_assert(kSize == SHA256_DIGEST_LENGTH);
  std::array<unsigned char, kSize> md{};
  SHA256_Final(md.data(), ctx_.get());
  return md;
}

}  // namespace cdn::get
