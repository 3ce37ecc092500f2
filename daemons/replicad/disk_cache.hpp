// SPDX-License-Identifier: MIT
// The edge cache's storage: pulled objects on disk in `dir`, an index in
// memory, LRU eviction beyond `max_bytes`, and a memory tier holding the
// bodies of small hot objects (up to `memory_bytes` in all).
//
// Layout: <dir>/<h>.body and <dir>/<h>.meta (JSON: format version, key,
// validators, freshness inputs, header fields, size, sha-256 digest), h =
// hex sha-256 of the key; a meta of another format version is dropped at
// start (counted in outdated_dropped()), never read as this one;
// bodies are written to <dir>/tmp/ first. A commit is: body fsync + rename,
// then meta written the same way, then the directory fsynced. A crash or a
// full disk leaves at worst a temp file (removed at start) or a body whose
// meta does not match it: at start every entry is read back and checked
// against its digest, and one that fails is deleted (and refetched when
// asked for). Nothing here touches the event loop; all calls are on the
// loop thread.
//
// Objects handed out are immutable and shared (store.hpp's Object): a
// response in flight keeps its Object and its open file descriptor, so
// eviction or replacement never cuts a transfer short.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/metrics/counter.hpp"
#include "common/purge/index.hpp"
#include "daemons/replicad/cache.hpp"
#include "daemons/replicad/store.hpp"

namespace cdn::replica {

// What is persisted with a body, besides the body.
struct EntryMeta {
  std::string key;  // normalised path plus "?query" when there is one
  cache::Stored stored;
  uint64_t size = 0;
  std::string digest;         // "sha-256=:<base64>:" of the body
  std::string etag;           // served: the origin's strong ETag, else ours from the digest
  std::string origin_etag;    // as the origin sent it (If-None-Match on revalidation); may be ""
  std::string last_modified;  // the origin's Last-Modified (If-Modified-Since); may be ""
  std::string content_type;
};

class DiskCache {
 public:
  struct Options {
    std::string dir;
    uint64_t max_bytes = 1ULL << 30;
    uint64_t memory_bytes = 64ULL << 20;
    uint64_t memory_object_limit = 256 * 1024;  // bodies up to this size may live in memory
    uint64_t spill_limit = 64ULL << 20;         // disk full: body kept in memory up to this
  };

  struct Entry {
    EntryMeta meta;
    std::shared_ptr<const Object> object;  // rel = the body's absolute path
    std::list<std::string>::iterator lru;  // position in lru_ (front = most recent)
  };

  // A body being received. Written to a temp file and hashed as it arrives;
  // small bodies are also kept in memory. If the disk fails (ENOSPC, EIO),
  // the bytes so far are read back and the rest is kept in memory up to
  // spill_limit: the waiting clients still get their answer, nothing is
  // stored. Destroying an uncommitted writer removes its temp file.
  class Writer {
   public:
    ~Writer();
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;
    // False when the body can be neither written nor held (over spill_limit).
    bool write(const char* data, size_t n);
    uint64_t size() const { return size_; }
    bool on_disk() const { return fd_ >= 0 && !spilled_; }
    const std::string& disk_error() const { return disk_error_; }
    // Completes the digest; after this, write() must not be called.
    void finish();
    const std::string& digest() const { return digest_; }   // after finish()
    const std::string& digest_hex() const { return hex_; }  // after finish()
    // A new descriptor of the body file (dup), -1 when the body is only in memory.
    int dup_fd() const;
    // The body when it is in memory (small, or spilled), else empty.
    bool in_memory() const { return keep_memory_; }
    const std::string& memory() const { return memory_; }

   private:
    friend class DiskCache;
    Writer() = default;
    int fd_ = -1;
    std::string tmp_path_;
    uint64_t size_ = 0;
    uint64_t memory_limit_ = 0;
    uint64_t spill_limit_ = 0;
    bool keep_memory_ = true;
    bool spilled_ = false;
    bool committed_ = false;
    std::string memory_;
    std::string disk_error_;
    std::string digest_, hex_;
    std::shared_ptr<void> ctx_;  // EVP_MD_CTX
  };

  // Creates the directory (and tmp/) when missing, removes stale temp files,
  // loads and verifies every entry. Throws std::runtime_error when the
  // directory cannot be used.
  explicit DiskCache(Options options);
  ~DiskCache();
  DiskCache(const DiskCache&) = delete;
  DiskCache& operator=(const DiskCache&) = delete;
  // Files of purged objects not yet removed (for tests and status).
  size_t purged_files_pending() const;

  // The entry for `key`, marked as just used; nullptr on a miss.
  const Entry* find(const std::string& key);
  const Entry* peek(const std::string& key) const;
  // A descriptor of the entry's body for sending; -1 (errno) when it is gone.
  int open(const Entry& e) const;

  // A writer for a new body; nullptr with errno set when no temp file can be made.
  std::unique_ptr<Writer> begin();
  // Stores a finished body under meta.key (size, digest and etag filled in
  // from the writer when empty), replacing an older copy and evicting the
  // least recently used entries to stay within max_bytes. Returns the entry,
  // or nullptr (errno set; logged by the caller) when it cannot be stored:
  // larger than max_bytes (EFBIG), spilled to memory, or a write failed.
  const Entry* commit(Writer& w, EntryMeta meta);
  // A 304 refreshed the stored response: new header lines and times (meta
  // rewritten).
  const Entry* refresh(const std::string& key, const cache::Stored& stored);
  void erase(const std::string& key);

  // Purges (common/purge/index.hpp), the request's paths in key form
  // (encoded as keys are). Hard: the objects leave the index at once (never
  // served again) and their files are removed by a thread of the cache's
  // own (unlinking 200,000 files takes minutes on a busy disk; the loop
  // must not wait for it); the purge is first appended to
  // <dir>/purges.journal (fsynced), so that a restart before the files are
  // gone drops every object a journalled purge names that was stored before
  // it. The journal is emptied by the next purge that finds no removal
  // pending. Soft: marked stale until stored or refreshed again (not kept
  // over a restart). Returns how many objects it named. An object's tags are
  // its stored Surrogate-Key and Cache-Tag fields.
  size_t purge(const purge::Request& r, int64_t now_ms);
  bool soft_purged(const std::string& key) const { return purges_.stale(key); }
  uint64_t purge_generation() const { return purges_.generation(); }
  // A fetch that started at `generation` brought `stored` for `key`: did
  // a hard purge since name it? (Then it is served but not stored.)
  bool purged_since(uint64_t generation, const std::string& key, const cache::Stored& stored,
                    int64_t now_ms);
  size_t tags() const { return purges_.tag_count(); }
  static std::vector<std::string> tags_of(const cache::Stored& stored);

  // The figures are read by every worker's pages (OwnCounter: one writer).
  uint64_t bytes() const { return bytes_; }
  uint64_t memory_bytes() const { return memory_used_; }
  size_t objects() const { return objects_; }
  uint64_t evictions() const { return evictions_; }
  uint64_t corrupt_dropped() const { return corrupt_; }
  uint64_t outdated_dropped() const { return outdated_; }
  uint64_t write_errors() const { return write_errors_; }
  const std::string& dir() const { return opt_.dir; }

  // The served ETag made from a digest's hex form (as the local store does).
  static std::string etag_of(const std::string& digest_hex);

 private:
  std::string path_of(const std::string& key, const char* suffix) const;
  void load_all();
  enum class Load { Loaded, Corrupt, Outdated, Purged };
  // The background removal of purged objects' files (see purge()).
  struct Remover {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::string> queue;  // keys, in order
    // Keys whose files are still to go; a commit of one takes it out
    // (under mu), so its new files are never removed.
    std::unordered_set<std::string> doomed;
    bool stop = false;
    std::thread thread;
  };
  void remover_loop();
  // Before a key's files are written again: no longer doomed.
  void claim(const std::string& key);
  void journal_purge(const purge::Request& r);
  void read_journal();
  Load load_one(const std::string& meta_path);
  std::shared_ptr<const Object> make_object(const EntryMeta& m, const std::string& body_path,
                                            std::string body, bool in_memory);
  bool write_meta(const EntryMeta& m);
  void insert(EntryMeta meta, std::string body_path, std::string body, bool in_memory);
  void remove_entry(std::unordered_map<std::string, Entry>::iterator it, bool unlink_files);
  void trim_memory();
  void evict_for(uint64_t incoming);

  Options opt_;
  int dir_fd_ = -1;
  std::unordered_map<std::string, Entry> index_;
  purge::Index purges_;  // the keys of index_, ordered, with their tags
  // Hard purges journalled before a restart: (wall seconds, purge).
  std::vector<std::pair<int64_t, purge::Request>> journal_;
  Remover remover_;
  std::list<std::string> lru_;
  metrics::OwnCounter bytes_ = 0;
  metrics::OwnCounter memory_used_ = 0;
  metrics::OwnCounter objects_ = 0;  // index_.size()
  metrics::OwnCounter evictions_ = 0;
  uint64_t corrupt_ = 0;
  uint64_t outdated_ = 0;
  metrics::OwnCounter write_errors_ = 0;
  uint64_t tmp_counter_ = 0;
};

}  // namespace cdn::replica
