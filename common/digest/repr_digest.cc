// SPDX-License-Identifier: MIT
#include "common/digest/repr_digest.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/digest/digest.hpp"
#include "common/http/structured.hpp"

namespace cdn::digest {

namespace {

template <size_t N>
bool take(const std::optional<http::sf::Item>& v,
          std::optional<std::array<unsigned char, N>>& slot) {
  if (!v) return true;
  if (v->type != http::sf::Item::Type::Bytes || v->bytes.size() != N) return false;
  slot.emplace();
  std::copy(v->bytes.begin(), v->bytes.end(), slot->begin());
  return true;
}

}  // namespace

std::optional<ReprDigest> parse_repr_digest(std::string_view field) {
  std::optional<http::sf::Item> sha256, sha512;
  const bool ok = http::sf::parse_dictionary(field, [&](std::string_view key, http::sf::Item v) {
    if (key == "sha-256") {
      sha256 = std::move(v);
    } else if (key == "sha-512") {
      sha512 = std::move(v);
    }
  });
  ReprDigest out;
  if (!ok || !take(sha256, out.sha256) || !take(sha512, out.sha512)) return std::nullopt;
  return out;
}

std::string sha256_from_repr_digest(std::string_view field) {
  const auto d = parse_repr_digest(field);
  if (!d || !d->sha256) return {};
  return repr_digest_sha256(d->sha256->data(), d->sha256->size());
}

}  // namespace cdn::digest
