// SPDX-License-Identifier: MIT
// The replica's content store: see store.hpp for the model. Everything a
// client names is opened relative to root_fd_ with openat2(RESOLVE_BENEATH),
// so the kernel, not string checks, keeps requests inside the content.
#include "daemons/replicad/store.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <utility>

#include "common/digest/digest.hpp"
#include "common/http/mime.hpp"
#include "common/http/path.hpp"
#include "common/http/serialize.hpp"

namespace cdn::replica {
namespace {

// Set once the kernel answered ENOSYS; never cleared (the kernel does not change under us).
std::atomic<bool> g_no_openat2{false};
std::atomic<bool> g_openat2_disabled_for_testing{false};

// A file that keeps changing while it is digested is given up on after this many reads.
constexpr int kReadAttempts = 3;
constexpr size_t kChunk = 64 * 1024;

std::string errno_message(const std::string& what, int err) {
  return what + ": " + std::strerror(err);
}

int64_t ctime_ns_of(const struct stat& st) {
  return static_cast<int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec;
}

// The identity a cached Object stands for; anything else means the bytes may differ.
bool same_version(const struct stat& st, const Object& obj) {
  return static_cast<uint64_t>(st.st_dev) == obj.device &&
         static_cast<uint64_t>(st.st_ino) == obj.inode &&
         static_cast<uint64_t>(st.st_size) == obj.size && st.st_mtim.tv_sec == obj.mtime &&
         st.st_mtim.tv_nsec == obj.mtime_nsec && ctime_ns_of(st) == obj.ctime_ns;
}

bool same_version(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_size == b.st_size &&
         a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
         ctime_ns_of(a) == ctime_ns_of(b);
}

std::string join_path(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) {
      const int saved = errno;  // callers report errno after the guard closes
      ::close(fd_);
      errno = saved;
    }
  }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

// What a failed open/stat means for the client. Only errors about the path
// itself say "not there"; the others (EMFILE, ENOMEM, EIO, EAGAIN from a
// file that kept changing...) say nothing about the file, and a 404 for
// them would be cached downstream as missing content: Unavailable (503).
Lookup lookup_error(int err) {
  switch (err) {
    case EXDEV:   // RESOLVE_BENEATH: the path (a "..", a symlink) leads out of the root
    case ELOOP:   // a magic link, or a symlink loop
    case EACCES:  // no permission, or not a regular file (see load())
    case EPERM:
      return Forbidden{};
    case ENOENT:
    case ENOTDIR:
    case ENAMETOOLONG:
      return NotFound{};
    default:
      return Unavailable{err};
  }
}

int open_reserve() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }

}  // namespace

// Lends the reserve descriptor for one open (see store.hpp, "Running out of
// descriptors"). Never waits: while another thread has it, there is none
// to lend, and that lookup is Unavailable like the rest of the burst.
class Store::ReserveLoan {
 public:
  explicit ReserveLoan(const Store& store)
      : store_(store), lock_(store.reserve_mu_, std::try_to_lock) {
    if (!lock_.owns_lock() || store_.reserve_fd_ < 0) return;
    ::close(store_.reserve_fd_);
    store_.reserve_fd_ = -1;
    lent_ = true;
  }
  ~ReserveLoan() {
    if (!lock_.owns_lock()) return;
    const int saved = errno;  // callers report errno after the loan ends
    store_.retake_reserve();
    errno = saved;
  }
  ReserveLoan(const ReserveLoan&) = delete;
  ReserveLoan& operator=(const ReserveLoan&) = delete;
  bool lent() const { return lent_; }

 private:
  const Store& store_;
  std::unique_lock<std::mutex> lock_;
  bool lent_ = false;
};

Store::~Store() {
  if (root_fd_ >= 0) ::close(root_fd_);
  if (reserve_fd_ >= 0) ::close(reserve_fd_);
}

void Store::retake_reserve() const {
  if (reserve_fd_ < 0) reserve_fd_ = open_reserve();
  reserve_lost_.store(reserve_fd_ < 0, std::memory_order_relaxed);
}

int Store::open_for_a_moment(const std::string& rel, int flags,
                             std::optional<ReserveLoan>& loan) const {
  int fd = open_beneath(rel, flags);
  if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
    const int err = errno;
    loan.emplace(*this);
    if (!loan->lent()) {
      errno = err;
      return -1;
    }
    return open_beneath(rel, flags);
  }
  if (fd >= 0 && reserve_lost_.load(std::memory_order_relaxed)) {
    // Lost in an earlier burst (the slot was taken before the loan ended):
    // descriptors can be had again, so take it back.
    const std::unique_lock lock(reserve_mu_, std::try_to_lock);
    if (lock.owns_lock()) retake_reserve();
  }
  return fd;
}

void Store::disable_openat2_for_testing(bool disabled) {
  g_openat2_disabled_for_testing.store(disabled);
}

std::unique_ptr<Store> Store::open_root(const std::string& dir, std::string index,
                                        uint64_t memory_limit) {
  if (index.empty() || index == "." || index == ".." || index.find('/') != std::string::npos ||
      index.find('\0') != std::string::npos) {
    throw std::runtime_error("index file name \"" + index + "\" must be a plain file name");
  }
  const int fd = ::open(dir.c_str(), O_DIRECTORY | O_PATH | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(errno_message("content root " + dir, errno));
  std::unique_ptr<Store> store(new Store);
  store->root_fd_ = fd;  // owned by the store from here on, also if we throw below
  char* real = ::realpath(dir.c_str(), nullptr);
  if (real == nullptr) throw std::runtime_error(errno_message("content root " + dir, errno));
  store->root_path_ = real;
  std::free(real);
  store->index_ = std::move(index);
  store->memory_limit_ = memory_limit;
  store->retake_reserve();
  return store;
}

std::unique_ptr<Store> Store::open_page(const std::string& file, uint64_t memory_limit) {
  // Resolve first so that a page given as a symlink is served from where it really lives.
  char* real = ::realpath(file.c_str(), nullptr);
  if (real == nullptr) throw std::runtime_error(errno_message("page " + file, errno));
  std::string resolved = real;
  std::free(real);
  struct stat st {};
  if (::stat(resolved.c_str(), &st) != 0) {
    throw std::runtime_error(errno_message("page " + file, errno));
  }
  if (!S_ISREG(st.st_mode)) throw std::runtime_error("page " + file + ": not a regular file");
  const size_t slash = resolved.rfind('/');
  std::string dir = slash == 0 ? "/" : resolved.substr(0, slash);
  const int fd = ::open(dir.c_str(), O_DIRECTORY | O_PATH | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(errno_message("page directory " + dir, errno));
  std::unique_ptr<Store> store(new Store);
  store->root_fd_ = fd;
  store->root_path_ = std::move(dir);
  store->page_name_ = resolved.substr(slash + 1);
  store->memory_limit_ = memory_limit;
  store->retake_reserve();
  return store;
}

std::string Store::source() const {
  if (!page_name_.empty()) return "page:" + join_path(root_path_, page_name_);
  return "root:" + root_path_;
}

int Store::open_beneath(const std::string& rel, int flags) const {
#ifdef SYS_openat2
  if (!g_no_openat2.load(std::memory_order_relaxed) &&
      !g_openat2_disabled_for_testing.load(std::memory_order_relaxed)) {
    struct open_how how {};
    how.flags = static_cast<uint64_t>(flags);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    const long fd = ::syscall(SYS_openat2, root_fd_, rel.c_str(), &how, sizeof how);
    if (fd >= 0 || errno != ENOSYS) return static_cast<int>(fd);
    g_no_openat2.store(true, std::memory_order_relaxed);
  }
#endif
  // Fallback without kernel help: resolve every symlink ourselves and check
  // the result is inside the root. A concurrent rename of a directory within
  // the root can race this; openat2 is the real protection.
  const std::string full = join_path(root_path_, rel);
  char* real = ::realpath(full.c_str(), nullptr);
  if (real == nullptr) {
    // Like openat2, say EXDEV (not ENOENT) when the path leaves the root
    // before it runs out: whether files exist outside is none of the client's business.
    const int err = errno;
    std::string prefix = full;
    while (real == nullptr && (errno == ENOENT || errno == ENOTDIR)) {
      const size_t slash = prefix.rfind('/');
      if (slash == std::string::npos || slash <= root_path_.size()) break;
      prefix.resize(slash);
      real = ::realpath(prefix.c_str(), nullptr);
    }
    const bool outside = real != nullptr && !inside_root(real);
    std::free(real);
    errno = outside ? EXDEV : err;
    return -1;
  }
  const std::string resolved = real;
  std::free(real);
  if (!inside_root(resolved)) {
    errno = EXDEV;
    return -1;
  }
  // resolved has no symlinks left; O_NOFOLLOW refuses one swapped in since.
  return ::open(resolved.c_str(), flags | O_NOFOLLOW);
}

bool Store::inside_root(const std::string& resolved) const {
  return root_path_ == "/" || resolved == root_path_ ||
         (resolved.size() > root_path_.size() &&
          resolved.compare(0, root_path_.size(), root_path_) == 0 &&
          resolved[root_path_.size()] == '/');
}

std::shared_ptr<const Object> Store::load(const std::string& rel) const {
  // O_NONBLOCK: opening a fifo that was swapped in must not hang the worker.
  std::optional<ReserveLoan> loan;  // declared first: ends after fd is closed
  FdGuard fd(open_for_a_moment(rel, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, loan));
  if (fd.get() < 0) return nullptr;

  std::array<unsigned char, kChunk> buf;  // NOLINT: filled by read() before use
  for (int attempt = 0; attempt < kReadAttempts; ++attempt) {
    struct stat before {};
    if (::fstat(fd.get(), &before) != 0) return nullptr;
    if (!S_ISREG(before.st_mode)) {
      errno = EACCES;
      return nullptr;
    }
    const auto size = static_cast<uint64_t>(before.st_size);
    const bool in_memory =
        size <= memory_limit_ && size <= memory_budget_.load(std::memory_order_relaxed);
    auto obj = std::make_shared<Object>();
    if (in_memory) obj->body.reserve(size);

    MdCtx ctx(EVP_MD_CTX_new());
    if (!ctx || EVP_DigestInit_ex(ctx.get(), digest::sha256(), nullptr) != 1) {
      errno = ENOMEM;
      return nullptr;
    }
    uint64_t total = 0;
    off_t offset = 0;
    bool changed = false;
    while (true) {
      const ssize_t n = ::pread(fd.get(), buf.data(), buf.size(), offset);
      if (n < 0) {
        if (errno == EINTR) continue;
        return nullptr;
      }
      if (n == 0) break;
      total += static_cast<uint64_t>(n);
      offset += n;
      if (total > size) {  // grew while we read: the digest would not match the size
        changed = true;
        break;
      }
      EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n));
      if (in_memory)
        obj->body.append(reinterpret_cast<const char*>(buf.data()), static_cast<size_t>(n));
    }
    struct stat after {};
    if (::fstat(fd.get(), &after) != 0) return nullptr;
    if (changed || total != size || !same_version(before, after)) continue;

    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned int md_len = 0;
    if (EVP_DigestFinal_ex(ctx.get(), md.data(), &md_len) != 1) {
      errno = EIO;
      return nullptr;
    }
    obj->rel = rel;
    obj->size = size;
    obj->mtime = before.st_mtim.tv_sec;
    obj->mtime_nsec = before.st_mtim.tv_nsec;
    obj->ctime_ns = ctime_ns_of(before);
    obj->inode = static_cast<uint64_t>(before.st_ino);
    obj->device = static_cast<uint64_t>(before.st_dev);
    obj->digest = digest::repr_digest_sha256(md.data(), md_len);
    obj->etag = "\"" + digest::to_hex(md.data(), md_len).substr(0, 16) + "\"";
    obj->content_type = http::mime_type(rel);
    obj->last_modified = http::http_date(obj->mtime);
    obj->in_memory = in_memory;
    return obj;
  }
  errno = EAGAIN;  // kept changing under us; the next request tries again
  return nullptr;
}

Lookup Store::lookup(std::string_view path, bool may_load) {
  if (path.empty() || path.front() != '/' || path.find('\0') != std::string_view::npos) {
    return NotFound{};
  }
  std::string rel;
  bool want_file = false;  // a directory here is "no such page", not a redirect
  if (!page_name_.empty()) {
    const std::string_view name = path.substr(1);
    if (!name.empty() && name != page_name_) return NotFound{};
    rel = page_name_;
    want_file = true;
  } else {
    rel.assign(path.substr(1));
    if (rel.empty() || rel.back() == '/') {
      rel += index_;
      want_file = true;
    }
  }

  const bool windowed = revalidate_after_.count() > 0;
  const auto now = windowed ? now_() : std::chrono::nanoseconds{0};
  if (windowed) {
    // Held in memory and checked against the disk less than a window ago:
    // served without a system call (see "Revalidation window" in store.hpp).
    const std::lock_guard lock(mu_);
    const auto it = cache_.find(rel);
    if (it != cache_.end() && it->second.object->in_memory &&
        now - it->second.checked < revalidate_after_) {
      touch(it->second);
      return Found{it->second.object};
    }
  }

  // O_PATH: checking a cached entry must not open (or block on) the file itself.
  struct stat st {};
  {
    std::optional<ReserveLoan> loan;  // declared first: ends after fd is closed
    FdGuard fd(open_for_a_moment(rel, O_PATH | O_CLOEXEC, loan));
    if (fd.get() < 0 || ::fstat(fd.get(), &st) != 0) {
      const int err = errno;
      if (err == ENOENT || err == ENOTDIR) {
        const std::lock_guard lock(mu_);
        // Deleted files do not keep their memory tier alive.
        if (const auto it = cache_.find(rel); it != cache_.end()) forget(it);
      }
      return lookup_error(err);
    }
  }
  if (S_ISDIR(st.st_mode)) {
    if (want_file) return NotFound{};
    return RedirectSlash{std::string(path) + "/"};
  }
  if (!S_ISREG(st.st_mode)) return Forbidden{};

  {
    const std::lock_guard lock(mu_);
    const auto it = cache_.find(rel);
    if (it != cache_.end() && same_version(st, *it->second.object)) {
      it->second.checked = now;
      touch(it->second);
      return Found{it->second.object};
    }
  }
  if (!may_load) return NeedsLoad{};
  // Digest outside the lock: other lookups (and cache hits) go on meanwhile.
  // Two threads missing on the same file both digest it; the last one wins.
  std::shared_ptr<const Object> obj = load(rel);
  if (!obj) return lookup_error(errno);
  {
    // `now` was read before the fstat above, so the window never outlasts
    // the check it rests on.
    const std::lock_guard lock(mu_);
    remember(rel, obj, now);
  }
  return Found{std::move(obj)};
}

void Store::touch(Entry& e) {
  recent_.splice(recent_.begin(), recent_, e.recent);
  if (e.object->in_memory)
    recent_bodies_.splice(recent_bodies_.begin(), recent_bodies_, e.recent_body);
}

void Store::remember(const std::string& rel, std::shared_ptr<const Object> obj,
                     std::chrono::nanoseconds checked) {
  if (const auto old = cache_.find(rel); old != cache_.end()) forget(old);
  const auto it = cache_.try_emplace(rel).first;
  Entry& e = it->second;
  e.object = std::move(obj);
  e.checked = checked;
  e.recent = recent_.insert(recent_.begin(), &it->first);
  if (e.object->in_memory) {
    e.recent_body = recent_bodies_.insert(recent_bodies_.begin(), &it->first);
    memory_bytes_ += e.object->body.size();
  }
  enforce_bounds();
}

void Store::forget(Entries::iterator it) {
  Entry& e = it->second;
  recent_.erase(e.recent);
  if (e.object->in_memory) {
    recent_bodies_.erase(e.recent_body);
    memory_bytes_ -= e.object->body.size();
  }
  cache_.erase(it);
}

void Store::enforce_bounds() {
  // The entry just remembered is at the front of both lists and within
  // both bounds on its own (load() holds no body larger than the budget,
  // max_entries_ >= 1), so it is forgotten only if the budget was lowered
  // while it was read; its caller still holds the object either way.
  const uint64_t budget = memory_budget_.load(std::memory_order_relaxed);
  while (memory_bytes_ > budget && !recent_bodies_.empty()) {
    forget(cache_.find(*recent_bodies_.back()));
    ++evictions_;
  }
  while (cache_.size() > max_entries_) {
    forget(cache_.find(*recent_.back()));
    ++evictions_;
  }
}

void Store::set_memory_budget(uint64_t bytes) {
  memory_budget_.store(bytes, std::memory_order_relaxed);
  const std::lock_guard lock(mu_);
  enforce_bounds();
}

void Store::set_max_entries(size_t entries) {
  const std::lock_guard lock(mu_);
  max_entries_ = std::max<size_t>(entries, 1);
  enforce_bounds();
}

uint64_t Store::memory_bytes() const {
  const std::lock_guard lock(mu_);
  return memory_bytes_;
}

size_t Store::entries() const {
  const std::lock_guard lock(mu_);
  return cache_.size();
}

uint64_t Store::evictions() const {
  const std::lock_guard lock(mu_);
  return evictions_;
}

std::chrono::nanoseconds Store::monotonic_now() {
  return std::chrono::steady_clock::now().time_since_epoch();
}

int Store::open(const Object& obj) const {
  FdGuard fd(open_beneath(obj.rel, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.get() < 0) return -1;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return -1;
  if (!S_ISREG(st.st_mode) || !same_version(st, obj)) {
    errno = ESTALE;
    return -1;
  }
  // O_NONBLOCK only guarded the open; the caller gets plain blocking reads as documented.
  const int fl = ::fcntl(fd.get(), F_GETFL);
  if (fl < 0 || ::fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK) != 0) return -1;
  return fd.release();
}

}  // namespace cdn::replica
