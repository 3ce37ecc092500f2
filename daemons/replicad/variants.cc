// SPDX-License-Identifier: MIT
#include "daemons/replicad/variants.hpp"

#include <algorithm>

namespace cdn::replica::variants {

std::string id_of(std::string_view key, std::string_view variant) {
  std::string id(key);
  if (!variant.empty()) {
    id.push_back('\0');
    id.append(variant);
  }
  return id;
}

std::string_view key_of(std::string_view id) { return id.substr(0, id.find('\0')); }

namespace {
// When a stored response was made: its Date (RFC 9111 §4.1 "as determined
// by the Date header field"), else when its head arrived.
int64_t made_at(const cache::Stored& s) {
  return cache::parse_date(s.headers, "Date", s.response_time).value_or(s.response_time);
}
}  // namespace

std::optional<size_t> select(std::span<const cache::Stored* const> stored, http::Fields request) {
  std::optional<size_t> best;
  int64_t best_at = 0;
  for (size_t i = 0; i < stored.size(); ++i) {
    if (stored[i] == nullptr || !cache::variant_matches(*stored[i], request)) continue;
    const int64_t at = made_at(*stored[i]);
    if (!best || at > best_at) {
      best = i;
      best_at = at;
    }
  }
  return best;
}

std::vector<std::string> Lru::add(const std::string& key, const std::string& variant) {
  auto& list = lists_[key];
  if (auto it = std::find(list.begin(), list.end(), variant); it != list.end()) list.erase(it);
  list.insert(list.begin(), variant);
  std::vector<std::string> dropped;
  while (list.size() > max_) {
    dropped.push_back(std::move(list.back()));
    list.pop_back();
  }
  return dropped;
}

void Lru::touch(const std::string& key, const std::string& variant) {
  auto l = lists_.find(key);
  if (l == lists_.end()) return;
  auto& list = l->second;
  auto it = std::find(list.begin(), list.end(), variant);
  if (it != list.end()) std::rotate(list.begin(), it, it + 1);
}

void Lru::erase(const std::string& key, const std::string& variant) {
  auto l = lists_.find(key);
  if (l == lists_.end()) return;
  auto& list = l->second;
  if (auto it = std::find(list.begin(), list.end(), variant); it != list.end()) list.erase(it);
  if (list.empty()) lists_.erase(l);
}

std::span<const std::string> Lru::of(const std::string& key) const {
  auto l = lists_.find(key);
  if (l == lists_.end()) return {};
  return l->second;
}

}  // namespace cdn::replica::variants
