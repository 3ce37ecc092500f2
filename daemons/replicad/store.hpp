// SPDX-License-Identifier: MIT
// The replica's content: a directory (`root`) or a single page (`page`),
// looked up by normalised request path. Files are opened beneath the root
// only (openat2 RESOLVE_BENEATH: no "..", no symlink out of the root; relative
// symlinks that stay inside are followed, absolute ones are refused even when
// they point inside, as the kernel cannot tell where "/" should be).
//
// Objects are immutable and shared: a response in flight keeps its Object
// alive. Each carries what the headers need (size, ETag, Last-Modified,
// sha-256 digest, type); small files also carry their bytes (memory tier).
// Digests are computed once per (inode, size, mtime) and cached; a file that
// changed on disk is noticed by fstat and re-digested.
//
// Revalidation window (set_revalidate_after): a file held in memory is
// checked against the disk (openat2 + fstat, 2 of the 3 syscalls a cached
// request cost) at most once per window, like nginx's open_file_cache_valid.
// A window rather than inotify: inotify watches directories, not paths, so a
// path through a symlinked directory, a renamed parent or an overflowed event
// queue would each need their own handling to stay correct, while a window is
// correct by construction and bounds staleness to a figure we choose. The
// daemon uses 100 ms: a rewrite shows within a tenth of a second (before a
// person can reload a page), and a busy file costs 10 checks a second instead
// of one per request. Whatever is served inside the window is one whole,
// consistent version (bytes, ETag and digest of the same read). Files not
// held in memory are checked on every lookup as before (their open() checks
// again anyway). The window is 0 (check every time) unless set.
//
// Bounds (set_memory_budget, set_max_entries): the bodies held in memory
// take at most the budget in all ([content] cache_memory), and at most
// max_entries files are remembered (their metadata and digest, some 700
// bytes each). Both are least-recently-used: a lookup that finds an entry
// moves it to the front, and going over a bound forgets the entries at the
// back (for the budget, the back-most that hold a body). A forgotten file
// is read and digested again on its next request, like a new one. A
// response in flight keeps its Object (and body) alive after eviction, so
// what is resident can exceed the budget by what is being sent.
//
// Running out of descriptors: one descriptor (/dev/null) is held in
// reserve. When an open for a lookup or a first read fails with EMFILE, the
// reserve is closed for that one short-lived open and taken back after it,
// so that a missing file is still told from an existing one (404 stays 404)
// and small files are still read. Only the descriptor a large file is
// streamed from cannot borrow it: open() fails and the caller answers 503.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>

namespace cdn::replica {

struct Object {
  std::string rel;  // path relative to the root ("a/index.html"); the page's file name for a page
  uint64_t size = 0;
  int64_t mtime = 0;       // seconds since the epoch
  int64_t mtime_nsec = 0;  // nanosecond part of the mtime (sub-second rewrites are noticed)
  // Status change time in ns: an in-place rewrite that puts the old mtime back still moves it.
  int64_t ctime_ns = 0;
  uint64_t inode = 0;
  uint64_t device = 0;
  std::string etag;    // strong: "\"<hex of digest prefix>\""
  std::string digest;  // "sha-256=:<base64>:" (RFC 9530 Repr-Digest value)
  std::string content_type;
  std::string last_modified;  // IMF-fixdate
  std::string body;           // the bytes when size <= memory_limit, else empty
  bool in_memory = false;
  // Whatever must live as long as any copy of this object (the edge cache:
  // its body file's blocks, counted against cache_size until the last
  // answer reading them lets go, even once the file is evicted). Copies
  // share it.
  std::shared_ptr<const void> hold;
};

struct NotFound {};
struct Forbidden {};  // exists but may not be served (not a regular file, escapes root)
// A directory asked for without its trailing slash; `location` is the path with it.
struct RedirectSlash {
  std::string location;
};
struct Found {
  std::shared_ptr<const Object> object;
};
// Only from lookup(path, false): the file is there but must be read and
// digested first, which the caller does off its event loop.
struct NeedsLoad {};
// The file system failed in a way that says nothing about the file (no
// descriptor or memory left, an I/O error, a file that kept changing while
// it was read): the caller answers 503 with Retry-After, never 404, which
// clients and caches would take as "the content is gone". `err` is the errno.
struct Unavailable {
  int err = 0;
};
using Lookup = std::variant<Found, NotFound, Forbidden, RedirectSlash, NeedsLoad, Unavailable>;

class Store {
 public:
  // Throws std::runtime_error with a clear message when the directory or page cannot be opened.
  static std::unique_ptr<Store> open_root(const std::string& dir, std::string index,
                                          uint64_t memory_limit = 256 * 1024);
  static std::unique_ptr<Store> open_page(const std::string& file,
                                          uint64_t memory_limit = 256 * 1024);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // `path` is already normalised (http::normalize_path). For a directory the
  // index file is served; for a page, "/" and "/<its name>" serve the page.
  // May read and digest the file on first use (blocking; callers that care
  // run it on a worker thread — it is safe to call from several threads).
  // Never throws for file-system errors: only ENOENT/ENOTDIR/ENAMETOOLONG
  // are NotFound; an error that says nothing about the file (EMFILE, EIO, a
  // file that keeps changing while it is digested) is Unavailable.
  Lookup lookup(std::string_view path, bool may_load = true);

  // Open the object's file for streaming (O_RDONLY|O_CLOEXEC, beneath the
  // root). Returns -1 (errno set) when it is gone or changed since lookup
  // (ESTALE: different inode/size/mtime; the caller answers 503 and the next
  // lookup sees the new version) or no descriptor can be had (EMFILE...).
  int open(const Object& obj) const;

  std::string source() const;  // "root:/srv/site" or "page:/srv/a.html"

  // See "Revalidation window" above; 0 checks the disk on every lookup.
  void set_revalidate_after(std::chrono::nanoseconds window) { revalidate_after_ = window; }
  // See "Bounds" above. The budget also decides which files may be held at
  // all (one larger than it is streamed from disk); lowering it evicts now.
  // Defaults: 64 MiB (as [content] cache_memory), 16384 entries (about 11 MB).
  void set_memory_budget(uint64_t bytes);
  void set_max_entries(size_t entries);  // at least 1
  uint64_t memory_bytes() const;         // bodies held now
  size_t entries() const;                // files remembered now
  uint64_t evictions() const;            // entries forgotten for a bound, in all

  // Tests only: the monotonic clock the window is measured with.
  void set_clock_for_testing(std::chrono::nanoseconds (*now)()) { now_ = now; }

  // Tests only: act as if the kernel had no openat2(2), so the realpath
  // fallback (kernels < 5.6, seccomp filters answering ENOSYS) is exercised.
  static void disable_openat2_for_testing(bool disabled);

 private:
  Store() = default;
  // openat2(root_fd_, rel, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) or its
  // fallback; -1 with errno (EXDEV when `rel` leads outside the root).
  int open_beneath(const std::string& rel, int flags) const;
  // For the fallback: is an absolute, symlink-free path at or beneath root_path_?
  bool inside_root(const std::string& resolved) const;
  // Reads and digests `rel`; nullptr (errno set) when it vanished, is not a
  // regular file, or kept changing while being read.
  std::shared_ptr<const Object> load(const std::string& rel) const;
  // The descriptor held back for EMFILE (see "Running out of descriptors").
  // A Loan closes it for one open and takes it back when the Loan ends,
  // which must be after that open's descriptor is closed.
  class ReserveLoan;
  int open_for_a_moment(const std::string& rel, int flags, std::optional<ReserveLoan>& loan) const;
  void retake_reserve() const;  // reserve_mu_ held
  mutable std::mutex reserve_mu_;
  mutable int reserve_fd_ = -1;
  mutable std::atomic<bool> reserve_lost_{false};
  int root_fd_ = -1;
  std::string root_path_;
  std::string page_name_;  // non-empty in page mode
  std::string index_;
  uint64_t memory_limit_ = 0;
  static std::chrono::nanoseconds monotonic_now();
  // The recency lists hold pointers to the map's keys (stable: an
  // unordered_map never moves its nodes); every entry is in recent_, and
  // those holding a body also in recent_bodies_, most recent first.
  using Recency = std::list<const std::string*>;
  struct Entry {
    std::shared_ptr<const Object> object;
    std::chrono::nanoseconds checked{};  // when the disk last matched it (now_ clock)
    Recency::iterator recent;
    Recency::iterator recent_body;  // valid when object->in_memory
  };
  using Entries = std::unordered_map<std::string, Entry>;
  // All with mu_ held.
  void touch(Entry& e);
  void remember(const std::string& rel, std::shared_ptr<const Object> obj,
                std::chrono::nanoseconds checked);
  void forget(Entries::iterator it);
  void enforce_bounds();
  std::chrono::nanoseconds revalidate_after_{0};
  std::chrono::nanoseconds (*now_)() = &Store::monotonic_now;
  std::atomic<uint64_t> memory_budget_{64ULL * 1024 * 1024};
  mutable std::mutex mu_;
  Entries cache_;
  Recency recent_;
  Recency recent_bodies_;
  size_t max_entries_ = 16384;
  uint64_t memory_bytes_ = 0;
  uint64_t evictions_ = 0;
};

}  // namespace cdn::replica
