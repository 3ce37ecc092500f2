// SPDX-License-Identifier: MIT
// Reading the RFC 9530 Repr-Digest field: an RFC 8941 Dictionary whose
// members name a hash algorithm and carry the digest as a Byte Sequence
// ("sha-256=:<base64>:, sha-512=:<base64>:"). One parser with one set of
// rules for everything that reads it (cdn-get, the replica's origin pull).
// Pure: no I/O, no OpenSSL; input length is the caller's header limit.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace cdn::digest {

struct ReprDigest {
  std::optional<std::array<unsigned char, 32>> sha256;
  std::optional<std::array<unsigned char, 64>> sha512;
};

// nullopt when the field is not a valid Dictionary (RFC 8941 4.2: such a
// field is ignored whole), or when a sha-256 / sha-512 member is not a Byte
// Sequence of its algorithm's length (a digest that cannot be read cannot be
// checked either). Members of other algorithms, and parameters, are skipped;
// of a repeated key the last one counts (RFC 8941 4.2.2).
std::optional<ReprDigest> parse_repr_digest(std::string_view field);

// The sha-256 member in this CDN's canonical form ("sha-256=:<base64>:", as
// repr_digest_sha256() writes it), so that it compares with a computed one;
// "" when the field is invalid or has no sha-256 member.
std::string sha256_from_repr_digest(std::string_view field);

}  // namespace cdn::digest
