// SPDX-License-Identifier: MIT
// The replica's purge index: which cache keys it holds, ordered (prefix
// purges walk a range), and which keys each tag names (tag purges touch only
// their objects, after Varnish's xkey), plus the soft-purge marks and the
// recent purges a fetch in flight must be checked against. Pure: keys and
// tags as strings, times (ms, any epoch) passed in, so unit tests drive it
// with a fake clock.
//
// Generation numbers: every purge applied gets the next generation. A fetch
// notes generation() when it starts; before its object is stored the caller
// asks purged_since(start, key, tags): a purge that came while the origin
// was answering names an object fetched (maybe) before the purge, which is
// then served to the clients that waited for it but not stored. Purges are
// remembered for kRecentPurges ms (longer than any fetch may take) and at
// most kMaxRecent of them; a fetch older than what is remembered is treated
// as purged (not stored), which errs on the side of a refetch.
//
// Keys are "path" or "path?query" (the disk cache's), each optionally
// followed by a NUL and a variant (RFC 9111 §4.1: one stored response of
// several for the URL); a purge of the URL names all of them. Owned by the disk
// cache, which keeps it in step with what it holds (stores, evictions).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/purge/purge.hpp"

namespace cdn::purge {

// Does purge `r` name the object `key` with these tags?
bool names(const Request& r, const std::string& key, const std::vector<std::string>& tags);

inline constexpr int64_t kRecentPurgesMs = 10 * 60 * 1000;
inline constexpr size_t kMaxRecent = 4096;

class Index {
 public:
  // `key` is held with these tags (a new object, or a new copy: replaces
  // the old tags and clears a soft purge's mark).
  void put(const std::string& key, const std::vector<std::string>& tags);
  void erase(const std::string& key);
  bool contains(const std::string& key) const { return keys_.count(key) != 0; }
  // Soft-purged since it was put: the next request revalidates it.
  bool stale(const std::string& key) const;

  // The held keys a purge names (ascending for URL and prefix; for tags in
  // no particular order, each once).
  std::vector<std::string> match(const Request& r) const;
  // Applies a purge at `now_ms`: soft marks the keys stale, hard forgets
  // them (the caller removes their objects). Returns the keys.
  std::vector<std::string> apply(const Request& r, int64_t now_ms);

  // The generation of the last purge applied (0: none yet).
  uint64_t generation() const { return generation_; }
  // Did a purge after generation `since` name this key or one of these tags?
  bool purged_since(uint64_t since, const std::string& key, const std::vector<std::string>& tags,
                    int64_t now_ms);

  size_t size() const { return keys_.size(); }
  size_t tag_count() const { return tags_.size(); }
  const std::vector<std::string>* tags_of(const std::string& key) const;

 private:
  struct Item {
    std::vector<std::string> tags;
    bool stale = false;
  };
  using Keys = std::map<std::string, Item, std::less<>>;
  void unlink_tags(const std::string* key, const Item& item);
  void forget_old(int64_t now_ms);
  template <typename Fn>
  void each_match(const Request& r, Fn fn) const;

  Keys keys_;
  // Tag -> the keys holding it, as pointers to keys_' own strings (map
  // nodes never move), so 100,000 tagged objects cost no second copy.
  std::unordered_map<std::string, std::unordered_set<const std::string*>> tags_;
  struct Recent {
    uint64_t generation;
    int64_t at_ms;
    Request request;
  };
  std::deque<Recent> recent_;
  uint64_t generation_ = 0;
  uint64_t forgotten_ = 0;  // the newest generation no longer in recent_
};

}  // namespace cdn::purge
