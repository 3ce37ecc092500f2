// SPDX-License-Identifier: MIT
// Encodings of SHA-256 digests as the CDN shows them: hex (ETags, cache
// file names) and the RFC 9530 Repr-Digest value. Pure; the hashing itself
// is OpenSSL's EVP interface at the call sites, with sha256() as its method.
#pragma once

#include <openssl/types.h>

#include <cstddef>
#include <string>

namespace cdn::digest {

std::string to_hex(const unsigned char* data, size_t n);
std::string to_base64(const unsigned char* data, size_t n);
// "sha-256=:<base64>:" for a SHA-256 digest (RFC 9530 Repr-Digest).
std::string repr_digest_sha256(const unsigned char* md, size_t n);
// SHA-256, fetched from the default provider once for the process: an
// EVP_sha256() given to each EVP_DigestInit_ex or EVP_Digest is looked up
// in the provider store again every time (a lock and a property query per
// fill). Never freed. Null when the provider has none.
const EVP_MD* sha256();

}  // namespace cdn::digest
