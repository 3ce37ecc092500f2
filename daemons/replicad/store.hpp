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
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
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
using Lookup = std::variant<Found, NotFound, Forbidden, RedirectSlash, NeedsLoad>;

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
  // Never throws for file-system errors: an unexpected one (EIO, EMFILE, a
  // file that keeps changing while it is digested) is reported as NotFound.
  Lookup lookup(std::string_view path, bool may_load = true);

  // Open the object's file for streaming (O_RDONLY|O_CLOEXEC, beneath the
  // root). Returns -1 (errno set) when it is gone or changed since lookup
  // (different inode/size/mtime): the caller answers 404/503 and looks up again.
  int open(const Object& obj) const;

  std::string source() const;  // "root:/srv/site" or "page:/srv/a.html"

  // See "Revalidation window" above; 0 checks the disk on every lookup.
  void set_revalidate_after(std::chrono::nanoseconds window) { revalidate_after_ = window; }
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
  int root_fd_ = -1;
  std::string root_path_;
  std::string page_name_;  // non-empty in page mode
  std::string index_;
  uint64_t memory_limit_ = 0;
  static std::chrono::nanoseconds monotonic_now();
  struct Entry {
    std::shared_ptr<const Object> object;
    std::chrono::nanoseconds checked{};  // when the disk last matched it (now_ clock)
  };
  std::chrono::nanoseconds revalidate_after_{0};
  std::chrono::nanoseconds (*now_)() = &Store::monotonic_now;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> cache_;
};

}  // namespace cdn::replica
