// SPDX-License-Identifier: MIT
#include "common/purge/index.hpp"

#include <algorithm>

namespace cdn::purge {

namespace {

// A key without the variant it may carry: "/a?x\0accept: y" -> "/a?x".
std::string_view url_of(std::string_view key) { return key.substr(0, key.find('\0')); }

// A key's path: "/a?x" -> "/a".
std::string_view path_of(std::string_view key) {
  const std::string_view url = url_of(key);
  return url.substr(0, url.find('?'));
}

bool url_matches(const std::string& target, std::string_view key) {
  if (target.find('?') != std::string::npos) return url_of(key) == target;
  return path_of(key) == target;
}

}  // namespace

bool names(const Request& r, const std::string& key, const std::vector<std::string>& tags) {
  switch (r.scope) {
    case Scope::Url:
      return url_matches(r.target, key);
    case Scope::Prefix:
      return path_of(key).starts_with(r.target);
    case Scope::Tag:
      for (const auto& t : r.tags) {
        if (std::find(tags.begin(), tags.end(), t) != tags.end()) return true;
      }
      return false;
  }
  return false;
}

void Index::put(const std::string& key, const std::vector<std::string>& tags) {
  auto [it, inserted] = keys_.try_emplace(key);
  if (!inserted) unlink_tags(&it->first, it->second);
  it->second.stale = false;
  it->second.tags.clear();
  for (const auto& t : tags) {
    if (std::find(it->second.tags.begin(), it->second.tags.end(), t) != it->second.tags.end()) {
      continue;
    }
    it->second.tags.push_back(t);
    tags_[t].insert(&it->first);
  }
}

void Index::unlink_tags(const std::string* key, const Item& item) {
  for (const auto& t : item.tags) {
    auto tit = tags_.find(t);
    if (tit == tags_.end()) continue;
    tit->second.erase(key);
    if (tit->second.empty()) tags_.erase(tit);
  }
}

void Index::erase(const std::string& key) {
  auto it = keys_.find(key);
  if (it == keys_.end()) return;
  unlink_tags(&it->first, it->second);
  keys_.erase(it);
}

bool Index::stale(const std::string& key) const {
  auto it = keys_.find(key);
  return it != keys_.end() && it->second.stale;
}

const std::vector<std::string>* Index::tags_of(const std::string& key) const {
  auto it = keys_.find(key);
  return it == keys_.end() ? nullptr : &it->second.tags;
}

template <typename Fn>
void Index::each_match(const Request& r, Fn fn) const {
  switch (r.scope) {
    case Scope::Url: {
      // The URL itself and its variants ("url\0variant": they sort together
      // right after it).
      const std::string variants = r.target + std::string(1, '\0');
      for (auto it = keys_.lower_bound(r.target);
           it != keys_.end() && (it->first == r.target || it->first.starts_with(variants)); ++it) {
        fn(it->first);
      }
      if (r.target.find('?') != std::string::npos) return;
      // Its queries (and their variants) sort together right after "path?".
      const std::string from = r.target + "?";
      for (auto it = keys_.lower_bound(from); it != keys_.end() && it->first.starts_with(from);
           ++it) {
        fn(it->first);
      }
      return;
    }
    case Scope::Prefix:
      for (auto it = keys_.lower_bound(r.target); it != keys_.end(); ++it) {
        // Keys sort by their whole text, and '?' sorts before most path
        // bytes: "/img?x" sits between "/img" and "/img/a". Every key whose
        // path starts with the prefix starts with it as text too, so the
        // range ends at the first key that does not.
        if (!it->first.starts_with(r.target)) break;
        if (path_of(it->first).starts_with(r.target)) fn(it->first);
      }
      return;
    case Scope::Tag: {
      if (r.tags.size() == 1) {
        if (auto t = tags_.find(r.tags.front()); t != tags_.end()) {
          for (const std::string* k : t->second) fn(*k);
        }
        return;
      }
      std::unordered_set<const std::string*> seen;
      for (const auto& tag : r.tags) {
        auto t = tags_.find(tag);
        if (t == tags_.end()) continue;
        for (const std::string* k : t->second) {
          if (seen.insert(k).second) fn(*k);
        }
      }
      return;
    }
  }
}

std::vector<std::string> Index::match(const Request& r) const {
  std::vector<std::string> out;
  each_match(r, [&](const std::string& k) { out.push_back(k); });
  return out;
}

std::vector<std::string> Index::apply(const Request& r, int64_t now_ms) {
  std::vector<std::string> keys = match(r);
  ++generation_;
  recent_.push_back({generation_, now_ms, r});
  forget_old(now_ms);
  for (const auto& k : keys) {
    if (r.soft) {
      keys_.find(k)->second.stale = true;
    } else {
      erase(k);
    }
  }
  return keys;
}

void Index::forget_old(int64_t now_ms) {
  while (!recent_.empty() &&
         (recent_.size() > kMaxRecent || now_ms - recent_.front().at_ms > kRecentPurgesMs)) {
    forgotten_ = recent_.front().generation;
    recent_.pop_front();
  }
}

bool Index::purged_since(uint64_t since, const std::string& key,
                         const std::vector<std::string>& tags, int64_t now_ms) {
  forget_old(now_ms);
  if (since < forgotten_) return true;
  for (auto it = recent_.rbegin(); it != recent_.rend() && it->generation > since; ++it) {
    // A soft purge leaves the copy servable: what the fetch brought is as
    // good as a revalidation.
    if (!it->request.soft && names(it->request, key, tags)) return true;
  }
  return false;
}

}  // namespace cdn::purge
