// SPDX-License-Identifier: MIT
// The variants of one URL in the edge cache (RFC 9111 §4.1): a URL's key
// holds up to a bound of stored responses, each under the secondary key
// (cache::variant_key) of the request that got it. This module names them,
// selects the one a request may use, and keeps each URL's variants in
// least-recently-used order so that the bound drops the coldest. Pure: no
// I/O, no clock (what "most recent" means is read from the stored
// responses' own times), so unit tests drive every path.
//
// Glossary. A *key* is a URL's cache key (cache::cache_key: path, "?query");
// a *variant* is a variant_key() string ("" for a response without Vary);
// an *id* names one stored response: the key alone for the variant "" (so
// an object without Vary keeps the name it always had), else key, NUL,
// variant (a NUL is in neither a key, which is %-encoded, nor a header
// value, which the parsers refuse).
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "daemons/replicad/cache.hpp"

namespace cdn::replica::variants {

std::string id_of(std::string_view key, std::string_view variant);
// The URL key an id belongs to ("/a" for "/a\0accept-encoding: gzip\n").
std::string_view key_of(std::string_view id);

// Of one URL's stored responses, the one `request` selects (§4.1): those
// whose variant the request matches (a Vary: * response matches none);
// among several, the most recent one (Date, else the time its head came),
// then the first in `stored` (callers pass them most recently used first).
// nullopt: none matches (a "vary-miss" when `stored` is not empty).
std::optional<size_t> select(std::span<const cache::Stored* const> stored, http::Fields request);

// Each URL's variants, most recently used first, at most `max` of them.
// Holds the variant strings only; the caller owns the stored responses and
// keeps this in step (add on store, touch on use, erase on removal).
class Lru {
 public:
  explicit Lru(size_t max_per_key) : max_(max_per_key < 1 ? 1 : max_per_key) {}
  // `variant` of `key` was stored (new or again): it becomes the most
  // recent. Returns the variants dropped to stay within the bound, least
  // recently used first; the caller removes them.
  std::vector<std::string> add(const std::string& key, const std::string& variant);
  // Used: moves to the front. Unknown: nothing.
  void touch(const std::string& key, const std::string& variant);
  void erase(const std::string& key, const std::string& variant);
  // The URL's variants, most recently used first; empty when it has none.
  std::span<const std::string> of(const std::string& key) const;
  size_t keys() const { return lists_.size(); }
  size_t max() const { return max_; }
  // A new bound; the URLs holding more keep them until their next add().
  void set_max(size_t max_per_key) { max_ = max_per_key < 1 ? 1 : max_per_key; }

 private:
  size_t max_;
  std::unordered_map<std::string, std::vector<std::string>> lists_;
};

}  // namespace cdn::replica::variants
