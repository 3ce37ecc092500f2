// SPDX-License-Identifier: MIT
#include "daemons/replicad/disk_cache.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <utility>
#include <vector>

#include "common/digest/digest.hpp"
#include "common/http/mime.hpp"
#include "common/http/path.hpp"
#include "common/http/serialize.hpp"
#include "common/text/text.hpp"

namespace cdn::replica {
namespace {

using nlohmann::json;

EVP_MD_CTX* new_sha256() {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx != nullptr && EVP_DigestInit_ex(ctx, digest::sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx);
    return nullptr;
  }
  return ctx;
}

// "sha-256=:<b64>:" and the hex form of a finished digest.
std::pair<std::string, std::string> finish_sha256(EVP_MD_CTX* ctx) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md.data(), &len);
  return {digest::repr_digest_sha256(md.data(), len), digest::to_hex(md.data(), len)};
}

std::string sha256_hex(std::string_view s) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  EVP_Digest(s.data(), s.size(), md.data(), &len, digest::sha256(), nullptr);
  return digest::to_hex(md.data(), len);
}

bool pwrite_all(int fd, const char* data, size_t n, off_t at) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, data, n, at);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += w;
    at += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool write_all(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

std::string read_small_file(const std::string& path, size_t limit) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  std::string out;
  char buf[8192];
  while (out.size() <= limit) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// The meta format. 3: the stored response's status, end-to-end header lines
// (cache.hpp decides from them) and the variant key of the request that got
// it. 1 had neither fields nor status; two development branches each wrote a
// "2" of their own, so 2 is skipped. A meta of another version is never read
// as this one: it is dropped at start (counted in outdated_dropped()).
constexpr int kFormat = 3;

json to_json(const EntryMeta& m) {
  json headers = json::array();
  for (const auto& h : m.stored.headers) headers.push_back(json::array({h.name, h.value}));
  return json{
      {"version", kFormat},
      {"key", m.key},
      {"status", m.stored.status},
      {"headers", std::move(headers)},
      {"variant", m.stored.variant},
      {"request_time", m.stored.request_time},
      {"response_time", m.stored.response_time},
      {"size", m.size},
      {"digest", m.digest},
      {"etag", m.etag},
      {"origin_etag", m.origin_etag},
      {"last_modified", m.last_modified},
      {"content_type", m.content_type},
  };
}

// nullopt: another format version; false: this version, but not valid.
std::optional<bool> from_json(const json& j, EntryMeta& m) {
  if (!j.is_object()) return false;
  if (j.value("version", 0) != kFormat) return std::nullopt;
  m.key = j.at("key").get<std::string>();
  m.stored.status = j.at("status").get<int>();
  m.stored.headers.clear();
  for (const auto& h : j.at("headers")) {
    m.stored.headers.push_back({h.at(0).get<std::string>(), h.at(1).get<std::string>()});
  }
  m.stored.variant = j.at("variant").get<std::string>();
  m.stored.request_time = j.at("request_time").get<int64_t>();
  m.stored.response_time = j.at("response_time").get<int64_t>();
  m.size = j.at("size").get<uint64_t>();
  m.digest = j.at("digest").get<std::string>();
  m.etag = j.at("etag").get<std::string>();
  m.origin_etag = j.at("origin_etag").get<std::string>();
  m.last_modified = j.at("last_modified").get<std::string>();
  m.content_type = j.at("content_type").get<std::string>();
  return !m.key.empty() && !m.digest.empty() && !m.etag.empty();
}

}  // namespace

// ---------------------------------------------------------------- Writer

DiskCache::Blocks::~Blocks() {
  if (charge == 0) return;
  if (auto p = pool.lock()) *p -= charge;
}

DiskCache::Writer::~Writer() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !tmp_path_.empty()) ::unlink(tmp_path_.c_str());
  // Streaming answers may still read the unlinked file.
  cache_->inflight_ -= reserved_;
  cache_->release(blocks_, reserved_);
  *cache_->spill_pool_ -= spill_held_;
}

bool DiskCache::Writer::write(const char* data, size_t n) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_.get()), data, n);
  size_ += n;
  if (passing_) return true;
  if (keep_memory_ && !spilled_ && size_ > memory_limit_) {
    keep_memory_ = false;
    std::string().swap(memory_);
  }
  if (spilled_) return spill(data, n);
  if (!cache_->reserve(*this, size_)) {
    disk_error_ = "no room within cache_size beside the bodies in flight and being read";
    return spill(data, n);
  }
  const off_t at = static_cast<off_t>(size_ - n);
  bool ok = pwrite_all(fd_, data, n, at);
  // A disk smaller than cache_size: room is made by evicting, not by
  // holding every later fill in memory.
  if (!ok && errno == ENOSPC && cache_->evict_for_space(n)) ok = pwrite_all(fd_, data, n, at);
  if (ok) {
    if (keep_memory_) memory_.append(data, n);
    return true;
  }
  disk_error_ = std::strerror(errno);
  return spill(data, n);
}

bool DiskCache::Writer::spill(const char* data, size_t n) {
  const uint64_t before = size_ - n;
  if (!spilled_) {
    // Read back what the disk holds and go on in memory.
    if (*cache_->spill_pool_ + size_ > spill_limit_) return false;
    if (!keep_memory_) {
      memory_.resize(before);
      uint64_t got = 0;
      while (got < before) {
        const ssize_t r = ::pread(fd_, memory_.data() + got, before - got, static_cast<off_t>(got));
        if (r <= 0) return false;
        got += static_cast<uint64_t>(r);
      }
    }
    drop_file();
    spilled_ = true;
    keep_memory_ = true;
    *cache_->spill_pool_ += memory_.capacity();
    spill_held_ = memory_.capacity();
  }
  // The pool counts what is allocated, not what is used: a string grown by
  // doubling holds up to twice its bytes. Growth is by half, within the pool.
  std::atomic<uint64_t>& pool = *cache_->spill_pool_;
  const uint64_t need = memory_.size() + n;
  if (need > memory_.capacity()) {
    const uint64_t room = spill_limit_ - std::min(spill_limit_, pool - spill_held_);
    if (need > room) return false;
    memory_.reserve(std::min(room, std::max(need, memory_.capacity() + memory_.capacity() / 2)));
  }
  memory_.append(data, n);
  pool += memory_.capacity() - spill_held_;
  spill_held_ = memory_.capacity();
  return true;
}

void DiskCache::Writer::drop_file() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!tmp_path_.empty()) ::unlink(tmp_path_.c_str());
  tmp_path_.clear();
  // What streaming answers read of the file stays counted until they end.
  cache_->inflight_ -= reserved_;
  cache_->release(blocks_, reserved_);
  reserved_ = 0;
}

void DiskCache::Writer::pass() {
  if (passing_) return;
  passing_ = true;
  drop_file();
  std::string().swap(memory_);
  *cache_->spill_pool_ -= spill_held_;
  spill_held_ = 0;
  spilled_ = true;
  keep_memory_ = false;
}

void DiskCache::Writer::finish() {
  auto [digest, hex] = finish_sha256(static_cast<EVP_MD_CTX*>(ctx_.get()));
  digest_ = std::move(digest);
  hex_ = std::move(hex);
}

std::shared_ptr<Object> DiskCache::Writer::object() {
  std::shared_ptr<Object> obj;
  if (spill_held_ > 0) {
    // Freed by the last answer: the memory leaves the pool then, not now.
    obj = std::shared_ptr<Object>(new Object,
                                  [pool = std::weak_ptr<std::atomic<uint64_t>>(cache_->spill_pool_),
                                   n = spill_held_](Object* o) {
                                    if (auto p = pool.lock()) *p -= n;
                                    delete o;
                                  });
    spill_held_ = 0;
  } else {
    obj = std::make_shared<Object>();
  }
  obj->size = size_;
  obj->digest = digest_;
  obj->in_memory = keep_memory_;
  if (keep_memory_) {
    obj->body = std::move(memory_);
  } else {
    obj->hold = blocks_;  // answered from the file: its blocks stay counted
  }
  return obj;
}

int DiskCache::Writer::dup_fd() const {
  if (fd_ < 0 || spilled_) return -1;
  return ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
}

// ---------------------------------------------------------------- DiskCache

std::string DiskCache::etag_of(const std::string& digest_hex) {
  return "\"" + digest_hex.substr(0, 16) + "\"";
}

DiskCache::DiskCache(Options options) : opt_(std::move(options)) {
  // Fetched now, not by the first fill.
  if (digest::sha256() == nullptr) throw std::runtime_error("OpenSSL offers no SHA-256");
  opt_.max_entries = std::max<size_t>(opt_.max_entries, 1);
  variants_.set_max(opt_.max_variants);
  std::error_code ec;
  const std::string& d = opt_.dir;
  // mkdir -p with owner-only permissions: the cache is nobody else's business.
  for (size_t pos = 1; pos <= d.size(); ++pos) {
    if (pos == d.size() || d[pos] == '/') {
      const std::string part = d.substr(0, pos);
      if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) {
        std::string why = "cache_dir ";
        why.append(d).append(": cannot create ").append(part).append(": ");
        throw std::runtime_error(why.append(std::strerror(errno)));
      }
    }
  }
  const std::string tmp = d + "/tmp";
  if (::mkdir(tmp.c_str(), 0700) != 0 && errno != EEXIST) {
    throw std::runtime_error("cache_dir " + d + ": cannot create tmp/: " + std::strerror(errno));
  }
  if (::access(tmp.c_str(), W_OK | X_OK) != 0) {
    throw std::runtime_error("cache_dir " + d + ": not writable: " + std::strerror(errno));
  }
  dir_fd_ = ::open(d.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC);
  if (dir_fd_ < 0) throw std::runtime_error("cache_dir " + d + ": " + std::strerror(errno));
  // Temp files left by a crash are never entries.
  if (DIR* td = ::opendir(tmp.c_str())) {
    while (const dirent* e = ::readdir(td)) {
      if (e->d_name[0] != '.') ::unlinkat(::dirfd(td), e->d_name, 0);
    }
    ::closedir(td);
  }
  read_journal();
  load_all();
  journal_.clear();  // only start-up reads it
  sync_.thread = std::thread([this] { sync_loop(); });
  io_.thread = std::thread([this] { io_loop(); });
}

DiskCache::~DiskCache() {
  {
    // The thread runs the jobs queued but purges' removals (the journal
    // has those), and ends: no commit is left half done.
    std::lock_guard lock(io_.mu);
    io_.stop = true;
  }
  io_.cv.notify_all();
  if (io_.thread.joinable()) io_.thread.join();
  {
    std::lock_guard lock(sync_.mu);
    sync_.stop = true;
  }
  sync_.cv.notify_all();
  if (sync_.thread.joinable()) sync_.thread.join();
  if (io_.spare_fd >= 0) {
    ::close(io_.spare_fd);
    ::unlink(io_.spare_path.c_str());
  }
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

size_t DiskCache::purged_files_pending() const {
  auto& t = const_cast<IoThread&>(io_);
  std::lock_guard lock(t.mu);
  return t.doomed.size();
}

namespace {
constexpr size_t kMaxSyncs = 256;
}  // namespace

std::string DiskCache::tmp_name() const {
  static std::atomic<uint64_t> counter{0};
  return opt_.dir + "/tmp/" + std::to_string(::getpid()) + "." + std::to_string(++counter);
}

void DiskCache::keep_spare() {
  if (!no_spare_) return;
  no_spare_ = false;
  {
    std::lock_guard lock(io_.mu);
    io_.want_spare = true;
  }
  io_.cv.notify_one();
}

void DiskCache::open_spare() {
  std::string path = tmp_name();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  // None made (no inode, no permission): begin() tries on its own, and
  // asks again after.
  if (fd < 0) return;
  std::lock_guard lock(io_.mu);
  if (io_.spare_fd >= 0 || io_.stop) {
    ::close(fd);
    ::unlink(path.c_str());
    return;
  }
  io_.spare_fd = fd;
  io_.spare_path = std::move(path);
}

void DiskCache::queue_job(Job job) {
  if (job.kind == Job::Kind::Commit || job.kind == Job::Kind::Meta) ++unreaped_;
  {
    std::lock_guard lock(io_.mu);
    io_.queue.push_back(std::move(job));
  }
  io_.cv.notify_one();
}

void DiskCache::hold_sync(int fd) {
  if (fd < 0) return;
  {
    std::lock_guard lock(sync_.mu);
    if (sync_.fds.size() < kMaxSyncs) {
      sync_.fds.push_back(fd);
      fd = -1;
    } else {
      sync_.all = true;
    }
  }
  if (fd >= 0) ::close(fd);
  sync_.cv.notify_one();
}

bool DiskCache::put_meta(const std::string& id, const std::string& text, int& fd) const {
  const std::string path = path_of(id, ".meta");
  const std::string tmp = path + ".tmp";
  fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  if (write_all(fd, text.data(), text.size()) && ::rename(tmp.c_str(), path.c_str()) == 0) {
    return true;
  }
  const int err = errno;
  ::close(fd);
  fd = -1;
  ::unlink(tmp.c_str());
  errno = err;
  return false;
}

DiskCache::Outcome DiskCache::run_job(Job& job, std::vector<int>& syncs) {
  Outcome out;
  out.kind = job.kind;
  out.gen = job.gen;
  const std::string meta = path_of(job.id, ".meta");
  const std::string body = path_of(job.id, ".body");
  // Meta first: a body without its meta is removed at start, never served.
  const auto unlink_both = [&] {
    ::unlink(meta.c_str());
    ::unlink(body.c_str());
  };
  switch (job.kind) {
    case Job::Kind::Unlink:
    case Job::Kind::Purged:
      unlink_both();
      break;
    case Job::Kind::Commit: {
      if (opt_.before_job) opt_.before_job();
      syncs.push_back(std::exchange(job.fd, -1));
      int meta_fd = -1;
      if (::rename(job.tmp.c_str(), body.c_str()) != 0) {
        out.err = errno;
        out.step = "body rename";
        ::unlink(job.tmp.c_str());
        unlink_both();  // nothing of an older entry stays under this id
      } else if (!put_meta(job.id, job.meta, meta_fd)) {
        out.err = errno;
        out.step = "meta write";
        unlink_both();
      }
      syncs.push_back(meta_fd);
      break;
    }
    case Job::Kind::Meta: {
      if (opt_.before_job) opt_.before_job();
      // The entry's commit failed before (its body is gone): nothing to describe.
      struct stat st {};
      if (::stat(body.c_str(), &st) != 0) break;
      int meta_fd = -1;
      if (!put_meta(job.id, job.meta, meta_fd)) {
        out.err = errno;
        out.step = "meta rewrite";
      }
      syncs.push_back(meta_fd);
      break;
    }
  }
  out.id = std::move(job.id);
  out.key = std::move(job.key);
  return out;
}

void DiskCache::io_loop() {
  std::unique_lock lock(io_.mu);
  for (;;) {
    io_.cv.wait(lock, [this] { return io_.stop || io_.want_spare || !io_.queue.empty(); });
    if (io_.want_spare && !io_.stop) {
      // Before the jobs: a client's first byte may wait on it.
      io_.want_spare = false;
      lock.unlock();
      open_spare();
      lock.lock();
      continue;
    }
    if (!io_.queue.empty()) {
      Job job = std::move(io_.queue.front());
      io_.queue.pop_front();
      const bool purged = job.kind == Job::Kind::Purged;
      const std::string purged_id = purged ? job.id : std::string();
      const bool reported = job.kind == Job::Kind::Commit || job.kind == Job::Kind::Meta;
      if (purged && io_.stop) {
        // At exit: the journal names it, the next start drops it.
      } else {
        io_.running = true;
        lock.unlock();
        std::vector<int> fds;
        Outcome out = run_job(job, fds);
        if (job.fd >= 0) ::close(job.fd);
        lock.lock();
        io_.running = false;
        for (const int fd : fds) hold_sync(fd);
        if (reported) {
          const bool first = io_.done.empty();
          io_.done.push_back(std::move(out));
          if (first && !io_.stop && opt_.wake) {
            lock.unlock();
            opt_.wake();
            lock.lock();
          }
        }
      }
      if (purged) {
        if (auto it = io_.doomed.find(purged_id); it != io_.doomed.end() && --it->second == 0) {
          io_.doomed.erase(it);
        }
      }
      if (io_.queue.empty() && !io_.running) io_.idle.notify_all();
      continue;
    }
    // Stopping, and the queue is done.
    io_.idle.notify_all();
    return;
  }
}

void DiskCache::sync_loop() {
  std::unique_lock lock(sync_.mu);
  for (;;) {
    sync_.cv.wait(lock, [this] { return sync_.stop || !sync_.fds.empty() || sync_.all; });
    if (sync_.stop) {
      // A clean exit loses nothing the kernel holds; only a crash of the
      // machine could, and the digest check at start covers that.
      for (const int fd : sync_.fds) ::close(fd);
      sync_.fds.clear();
      return;
    }
    // Outside the lock: the job thread hands over descriptors meanwhile.
    std::vector<int> fds;
    fds.swap(sync_.fds);
    const bool all = std::exchange(sync_.all, false);
    lock.unlock();
    if (opt_.before_sync) opt_.before_sync();
    for (const int fd : fds) {
      if (!all) ::fsync(fd);
      ::close(fd);
    }
    if (all) {
      ::syncfs(dir_fd_);
    } else {
      ::fsync(dir_fd_);
    }
    lock.lock();
  }
}

std::vector<std::string> DiskCache::reap() {
  std::vector<std::string> failures;
  std::vector<Outcome> done;
  {
    std::lock_guard lock(io_.mu);
    done.swap(io_.done);
  }
  for (auto& o : done) {
    --unreaped_;
    auto it = index_.find(o.id);
    const bool mine = it != index_.end() && it->second.gen == o.gen;
    if (mine) {
      --it->second.jobs;
      if (o.kind == Job::Kind::Commit) it->second.body_fd.reset();  // served by its name now
    }
    if (o.err == 0) continue;
    ++write_errors_;
    if (o.kind == Job::Kind::Commit) {
      failures.push_back(o.key + " not stored: " + o.step + ": " + std::strerror(o.err));
      // Its files are gone (the thread removed them); answers reading it
      // keep their descriptors.
      if (mine) remove_entry(it, false);
    } else {
      // The old meta stays, with its body: still fresh in memory until restart.
      failures.push_back(o.key + " refreshed in memory only: " + o.step + ": " +
                         std::strerror(o.err));
    }
  }
  return failures;
}

std::vector<std::string> DiskCache::settle() {
  {
    std::unique_lock lock(io_.mu);
    io_.idle.wait(lock, [this] { return (io_.queue.empty() && !io_.running) || io_.stop; });
  }
  return reap();
}

void DiskCache::journal_purge(const purge::Request& r) {
  json j{{"at", static_cast<int64_t>(::time(nullptr))},
         {"scope", std::string(purge::to_string(r.scope))},
         {"target", r.target},
         {"tags", r.tags}};
  const std::string path = opt_.dir + "/purges.journal";
  bool empty;
  {
    std::lock_guard lock(io_.mu);
    empty = io_.doomed.empty();
  }
  // Nothing left to remove: the purges journalled so far are done with.
  const int fd =
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (empty ? O_TRUNC : 0), 0600);
  if (fd < 0) {
    ++write_errors_;
    return;
  }
  const std::string line = j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  if (!write_all(fd, line.data(), line.size()) || ::fsync(fd) != 0) ++write_errors_;
  ::close(fd);
}

void DiskCache::read_journal() {
  std::string text;
  try {
    text = read_small_file(opt_.dir + "/purges.journal", 64 << 20);
  } catch (const std::exception&) {
    return;  // none
  }
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();  // a line cut short by a crash: still read
    try {
      const json j = json::parse(text.substr(pos, eol - pos));
      purge::Request r;
      const std::string scope = j.at("scope").get<std::string>();
      r.scope = scope == "tag"      ? purge::Scope::Tag
                : scope == "prefix" ? purge::Scope::Prefix
                                    : purge::Scope::Url;
      r.target = j.at("target").get<std::string>();
      r.tags = j.at("tags").get<std::vector<std::string>>();
      journal_.emplace_back(j.at("at").get<int64_t>(), std::move(r));
    } catch (const std::exception&) {
      // A torn line: the purges before it still count.
    }
    pos = eol + 1;
  }
}

std::string DiskCache::path_of(const std::string& id, const char* suffix) const {
  return opt_.dir + "/" + sha256_hex(id).substr(0, 40) + suffix;
}

void DiskCache::load_all() {
  DIR* dir = ::opendir(opt_.dir.c_str());
  if (dir == nullptr) return;
  std::vector<std::string> metas, bodies;
  while (const dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (name.ends_with(".meta")) metas.push_back(name);
    if (name.ends_with(".body")) bodies.push_back(name);
    if (name.ends_with(".meta.tmp")) ::unlinkat(dir_fd_, name.c_str(), 0);
  }
  ::closedir(dir);
  for (const auto& m : metas) {
    const Load r = load_one(opt_.dir + "/" + m);
    if (r != Load::Loaded) {
      if (r != Load::Purged) ++(r == Load::Outdated ? outdated_ : corrupt_);
      const std::string stem = m.substr(0, m.size() - 5);
      ::unlinkat(dir_fd_, m.c_str(), 0);
      ::unlinkat(dir_fd_, (stem + ".body").c_str(), 0);
    }
  }
  // Bodies whose meta never made it (a crash between the two renames).
  for (const auto& b : bodies) {
    const std::string stem = b.substr(0, b.size() - 5);
    struct stat st {};
    if (::fstatat(dir_fd_, (stem + ".meta").c_str(), &st, 0) != 0) {
      ::unlinkat(dir_fd_, b.c_str(), 0);
    }
  }
  trim_memory();
  make_room(0);
  evict_entries();
}

DiskCache::Load DiskCache::load_one(const std::string& meta_path) {
  EntryMeta m;
  try {
    const json j = json::parse(read_small_file(meta_path, 1 << 20));
    const auto ok = from_json(j, m);
    if (!ok) return Load::Outdated;
    if (!*ok) return Load::Corrupt;
  } catch (const std::exception&) {
    return Load::Corrupt;
  }
  const std::string id = variants::id_of(m.key, m.stored.variant);
  if (path_of(id, ".meta") != meta_path) {
    // Before variants, every response of a URL was filed under its key:
    // one with a variant moves to its own name (the same format otherwise).
    if (m.stored.variant.empty() || path_of(m.key, ".meta") != meta_path) return Load::Corrupt;
    if (::rename(path_of(m.key, ".body").c_str(), path_of(id, ".body").c_str()) != 0 ||
        ::rename(meta_path.c_str(), path_of(id, ".meta").c_str()) != 0) {
      ::unlink(path_of(id, ".body").c_str());
      return Load::Corrupt;
    }
  }
  if (!journal_.empty()) {
    const auto tags = tags_of(m.stored);
    for (const auto& [at, r] : journal_) {
      if (m.stored.response_time <= at && purge::names(r, m.key, tags)) return Load::Purged;
    }
  }
  const std::string body_path = path_of(id, ".body");
  const int fd = ::open(body_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Load::Corrupt;
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(new_sha256(), EVP_MD_CTX_free);
  const bool in_memory = m.size <= opt_.memory_object_limit;
  std::string body;
  uint64_t total = 0;
  std::vector<char> buf(256 * 1024);
  bool ok = ctx != nullptr;
  while (ok) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ok = false;
    if (n <= 0) break;
    total += static_cast<uint64_t>(n);
    if (total > m.size) ok = false;
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n));
    if (in_memory && ok) body.append(buf.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  if (!ok || total != m.size) return Load::Corrupt;
  if (finish_sha256(ctx.get()).first != m.digest) return Load::Corrupt;
  insert(std::move(m), body_path, std::move(body), in_memory);
  return Load::Loaded;
}

std::shared_ptr<const Object> DiskCache::make_object(const EntryMeta& m,
                                                     const std::string& body_path, std::string body,
                                                     bool in_memory) {
  auto obj = std::make_shared<Object>();
  obj->rel = body_path;
  obj->size = m.size;
  obj->etag = m.etag;
  obj->digest = m.digest;
  obj->content_type =
      m.content_type.empty() ? http::mime_type(m.key.substr(0, m.key.find('?'))) : m.content_type;
  const int64_t lm = m.last_modified.empty() ? -1 : http::parse_http_date(m.last_modified);
  obj->mtime = lm >= 0 ? lm : m.stored.response_time;
  obj->last_modified = lm >= 0 ? m.last_modified : http::http_date(obj->mtime);
  obj->in_memory = in_memory;
  if (in_memory) obj->body = std::move(body);
  return obj;
}

void DiskCache::insert(EntryMeta meta, const std::string& body_path, std::string body,
                       bool in_memory, std::shared_ptr<Blocks> blocks) {
  std::string id = variants::id_of(meta.key, meta.stored.variant);
  if (auto old = index_.find(id); old != index_.end()) remove_entry(old, false);
  lru_.push_front(id);
  Entry e;
  if (!blocks) {
    blocks = std::make_shared<Blocks>();
    blocks->pool = open_pool_;
  }
  auto obj = make_object(meta, body_path, std::move(body), in_memory);
  std::const_pointer_cast<Object>(obj)->hold = blocks;
  e.object = std::move(obj);
  e.blocks = std::move(blocks);
  if (in_memory) memory_used_ += meta.size;
  bytes_ += meta.size;
  footprint_ += cost(meta.size);
  purges_.put(id, tags_of(meta.stored));
  const auto dropped = variants_.add(meta.key, meta.stored.variant);
  e.meta = std::move(meta);
  e.lru = lru_.begin();
  e.id = id;
  e.gen = ++gen_counter_;
  index_bytes_ += index_cost(e);
  const std::string key = e.meta.key;
  index_.emplace(std::move(id), std::move(e));
  // Past max_variants: the URL's least recently used variant goes.
  for (const auto& v : dropped) {
    if (auto it = index_.find(variants::id_of(key, v)); it != index_.end()) {
      remove_entry(it, true);
      ++evictions_;
    }
  }
  evict_entries();
  // Only now: other workers' pages read it, and never see the bound passed.
  objects_ = index_.size();
}

uint64_t DiskCache::index_cost(const Entry& e) {
  // The map node and its id, the LRU node and its copy of the id, the
  // purge index's node and copy, the Object and the meta's strings; each
  // string's heap block counted at its length (short ones live inline).
  uint64_t n = sizeof(Entry) + sizeof(Object) + 4 * e.id.size() + 192;
  const EntryMeta& m = e.meta;
  n += m.key.size() + m.stored.variant.size() + m.digest.size() + m.etag.size() +
       m.origin_etag.size() + m.last_modified.size() + m.content_type.size();
  n += e.object->rel.size() + e.object->etag.size() + e.object->digest.size() +
       e.object->content_type.size() + e.object->last_modified.size();
  for (const auto& h : m.stored.headers) n += sizeof(h) + h.name.size() + h.value.size();
  return n;
}

void DiskCache::evict_entries() {
  while (index_.size() > opt_.max_entries && !lru_.empty()) {
    remove_entry(index_.find(lru_.back()), true);
    ++evictions_;
  }
}

void DiskCache::remove_entry(std::unordered_map<std::string, Entry>::iterator it,
                             bool unlink_files) {
  const Entry& e = it->second;
  bytes_ -= e.meta.size;
  footprint_ -= cost(e.meta.size);
  if (e.object->in_memory) memory_used_ -= e.meta.size;
  index_bytes_ -= index_cost(e);
  if (unlink_files && e.jobs > 0) {
    // After its jobs, on the cache's thread: their renames must not bring
    // the files back.
    Job job;
    job.kind = Job::Kind::Unlink;
    job.id = e.id;
    queue_job(std::move(job));
  } else if (unlink_files) {
    // Meta first: a body without its meta is removed at start, never served.
    ::unlink(path_of(e.id, ".meta").c_str());
    ::unlink(path_of(e.id, ".body").c_str());
  }
  release(it->second.blocks, cost(e.meta.size));
  lru_.erase(e.lru);
  variants_.erase(e.meta.key, e.meta.stored.variant);
  purges_.erase(it->first);
  index_.erase(it);
  objects_ = index_.size();
}

void DiskCache::trim_memory() {
  // Least recently used bodies leave memory first; they stay on disk.
  for (auto it = lru_.rbegin(); it != lru_.rend() && memory_used_ > opt_.memory_bytes; ++it) {
    Entry& e = index_.at(*it);
    if (!e.object->in_memory) continue;
    auto copy = std::make_shared<Object>(*e.object);
    copy->body.clear();
    copy->body.shrink_to_fit();
    copy->in_memory = false;
    memory_used_ -= e.meta.size;
    e.object = std::move(copy);
  }
}

uint64_t DiskCache::cost(uint64_t size) const {
  const uint64_t b = std::max<uint64_t>(opt_.block_size, 1);
  return (size + b - 1) / b * b + (b > 1 ? b : 0);
}

void DiskCache::release(std::shared_ptr<Blocks>& b, uint64_t bytes) {
  if (!b) return;
  // Counted before our reference goes: the last holder (maybe this one,
  // maybe an answer on another worker's loop) gives it back.
  if (bytes > 0) {
    b->charge += bytes;
    *open_pool_ += bytes;
  }
  b.reset();
}

bool DiskCache::in_use(const Entry& e) {
  // The entry holds its Object and its Blocks, the Object holds the Blocks;
  // anything more is an answer (or an older copy of the Object one holds).
  return e.object.use_count() > 1 || e.blocks.use_count() > 2;
}

bool DiskCache::make_room(uint64_t n) {
  const auto fits = [&] {
    return footprint_ + inflight_ + open_pool_->load() + n <= opt_.max_bytes;
  };
  // What no eviction can free past the bound already: keep the entries.
  if (inflight_ + open_pool_->load() + n > opt_.max_bytes) return false;
  // From the least recently used end; entries being read are passed over.
  auto it = lru_.end();
  while (!fits() && it != lru_.begin()) {
    const auto cur = std::prev(it);
    const auto e = index_.find(*cur);
    if (in_use(e->second)) {
      it = cur;
      continue;
    }
    remove_entry(e, true);  // erases *cur; `it` stays valid
    ++evictions_;
  }
  return fits();
}

bool DiskCache::reserve(Writer& w, uint64_t total) {
  const uint64_t want = cost(total);
  if (want <= w.reserved_) return true;
  const uint64_t more = want - w.reserved_;
  if (!make_room(more)) return false;
  inflight_ += more;
  w.reserved_ += more;
  return true;
}

bool DiskCache::evict_for_space(uint64_t n) {
  // Room for this write and some after it: the least recently used entries
  // nobody reads (a file being read frees nothing when unlinked). A cache
  // holding less than that keeps what it has (the body goes on in memory,
  // and is not stored).
  const uint64_t want = n + (1ULL << 20);
  if (footprint_ < want) return false;
  uint64_t freed = 0;
  auto it = lru_.end();
  while (freed < want && it != lru_.begin()) {
    const auto cur = std::prev(it);
    const auto e = index_.find(*cur);
    if (in_use(e->second)) {
      it = cur;
      continue;
    }
    freed += cost(e->second.meta.size);
    remove_entry(e, true);
    ++evictions_;
  }
  return freed > 0;
}

const DiskCache::Entry* DiskCache::find(const std::string& key, http::Fields request) {
  const Entry* e = peek(key, request);
  if (e == nullptr) return nullptr;
  lru_.splice(lru_.begin(), lru_, e->lru);
  variants_.touch(key, e->meta.stored.variant);
  return e;
}

const DiskCache::Entry* DiskCache::peek(const std::string& key, http::Fields request) const {
  const auto list = variants_.of(key);
  if (list.empty()) return nullptr;
  // At most max_variants of them: a small array, no allocation for most.
  std::vector<const Entry*> entries;
  std::vector<const cache::Stored*> stored;
  entries.reserve(list.size());
  stored.reserve(list.size());
  for (const auto& v : list) {
    const Entry* e = peek_variant(key, v);
    entries.push_back(e);
    stored.push_back(e != nullptr ? &e->meta.stored : nullptr);
  }
  const auto i = variants::select(stored, request);
  return i ? entries[*i] : nullptr;
}

const DiskCache::Entry* DiskCache::peek_variant(const std::string& key,
                                                const std::string& variant) const {
  auto it = index_.find(variants::id_of(key, variant));
  return it == index_.end() ? nullptr : &it->second;
}

int DiskCache::open(const Entry& e) const {
  // Offsets are never shared in effect: answers read by offset (pread, sendfile).
  const int fd = e.body_fd ? ::fcntl(*e.body_fd, F_DUPFD_CLOEXEC, 0)
                           : ::open(e.object->rel.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != e.meta.size) {
    ::close(fd);
    errno = ESTALE;
    return -1;
  }
  return fd;
}

std::unique_ptr<DiskCache::Writer> DiskCache::begin(std::optional<uint64_t> length) {
  std::unique_ptr<Writer> w(new Writer);
  w->cache_ = this;
  w->blocks_ = std::make_shared<Blocks>();
  w->blocks_->pool = open_pool_;
  w->memory_limit_ = opt_.memory_object_limit;
  w->spill_limit_ = opt_.spill_limit;
  w->ctx_ = std::shared_ptr<void>(new_sha256(),
                                  [](void* p) { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(p)); });
  if (!w->ctx_) {
    errno = ENOMEM;
    return nullptr;
  }
  {
    std::lock_guard lock(io_.mu);
    w->fd_ = std::exchange(io_.spare_fd, -1);
    w->tmp_path_ = std::move(io_.spare_path);
    io_.spare_path.clear();
  }
  no_spare_ = true;
  if (w->fd_ < 0) {
    w->tmp_path_ = tmp_name();
    w->fd_ = ::open(w->tmp_path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  }
  if (w->fd_ < 0) {
    // No temp file (disk full of inodes, permissions): keep the body in memory.
    w->disk_error_ = std::strerror(errno);
    w->tmp_path_.clear();
    w->spilled_ = true;
  } else if (length && !reserve(*w, *length)) {
    // No room for all of it: not a byte goes to disk (it would be counted
    // past the bound, or cut off halfway); held in memory, not stored.
    w->drop_file();
    w->disk_error_ = "no room for its Content-Length within cache_size";
    w->spilled_ = true;
  } else if (length && *length > w->memory_limit_) {
    // Never kept in memory: its first bytes are not copied there either
    // (a copy and an allocation before the first client's head).
    w->keep_memory_ = false;
  }
  return w;
}

const DiskCache::Entry* DiskCache::commit(Writer& w, EntryMeta meta) {
  meta.size = w.size();
  meta.digest = w.digest();
  if (meta.etag.empty()) meta.etag = etag_of(w.digest_hex());
  if (!w.on_disk()) {
    ++write_errors_;
    errno = ENOSPC;
    return nullptr;
  }
  if (cost(meta.size) > opt_.max_bytes) {
    errno = EFBIG;
    return nullptr;
  }
  const std::string id = variants::id_of(meta.key, meta.stored.variant);
  const std::string body_path = path_of(id, ".body");
  // Drop the old entry's meta before its body changes under it.
  if (auto old = index_.find(id); old != index_.end()) remove_entry(old, true);
  // The meta's block (and the body's last one) within the bound too.
  if (!reserve(w, meta.size)) {
    errno = ENOSPC;
    return nullptr;
  }
  // One descriptor answers from the body until the job is reaped, the
  // other is the thread's to fsync.
  const int keep = ::fcntl(w.fd_, F_DUPFD_CLOEXEC, 0);
  const int sync = keep < 0 ? -1 : ::fcntl(w.fd_, F_DUPFD_CLOEXEC, 0);
  if (sync < 0) {
    const int err = errno;
    if (keep >= 0) ::close(keep);
    ++write_errors_;
    errno = err;
    return nullptr;
  }
  w.committed_ = true;  // the temp file is the job's
  // The body's reservation becomes the entry's blocks (insert() below).
  inflight_ -= w.reserved_;
  w.reserved_ = 0;
  Job job;
  job.kind = Job::Kind::Commit;
  job.id = id;
  job.key = meta.key;
  job.tmp = w.tmp_path_;
  job.meta = to_json(meta).dump(-1, ' ', false, json::error_handler_t::replace);
  job.fd = sync;
  const bool in_memory = w.in_memory() && meta.size <= opt_.memory_object_limit;
  const std::string key = meta.key;
  const std::string variant = meta.stored.variant;
  insert(std::move(meta), body_path, in_memory ? w.memory() : std::string(), in_memory, w.blocks_);
  Entry& e = index_.at(id);  // the newest entry is never the one evicted
  e.body_fd = std::shared_ptr<const int>(new int(keep), [](const int* fd) {
    ::close(*fd);
    delete fd;
  });
  ++e.jobs;
  job.gen = e.gen;
  // The renames, the meta and the fsyncs: the cache's thread (a rename or
  // an open waits on the directory's lock and the journal, tens of ms
  // under a flood of fills).
  queue_job(std::move(job));
  trim_memory();
  return peek_variant(key, variant);
}

const DiskCache::Entry* DiskCache::refresh(const std::string& key, const cache::Stored& stored) {
  auto it = index_.find(variants::id_of(key, stored.variant));
  if (it == index_.end()) return nullptr;
  Entry& e = it->second;
  index_bytes_ -= index_cost(e);
  e.meta.stored = stored;
  index_bytes_ += index_cost(e);
  purges_.put(e.id, tags_of(stored));  // revalidated: a soft purge's mark goes
  Job job;
  job.kind = Job::Kind::Meta;
  job.id = e.id;
  job.key = key;
  job.gen = e.gen;
  job.meta = to_json(e.meta).dump(-1, ' ', false, json::error_handler_t::replace);
  ++e.jobs;
  queue_job(std::move(job));
  lru_.splice(lru_.begin(), lru_, e.lru);
  variants_.touch(key, stored.variant);
  return &e;
}

void DiskCache::erase(const std::string& key, const std::string& variant) {
  auto it = index_.find(variants::id_of(key, variant));
  if (it != index_.end()) remove_entry(it, true);
}

void DiskCache::erase_all(const std::string& key) {
  const auto list = variants_.of(key);
  const std::vector<std::string> all(list.begin(), list.end());
  for (const auto& v : all) erase(key, v);
}

std::vector<std::string> DiskCache::tags_of(const cache::Stored& stored) {
  std::vector<std::string> tags;
  for (const auto& h : stored.headers) {
    if (!text::iequals(h.name, "Surrogate-Key") && !text::iequals(h.name, "Cache-Tag")) continue;
    for (auto& t : purge::split_tags(h.value)) {
      if (std::find(tags.begin(), tags.end(), t) == tags.end()) tags.push_back(std::move(t));
    }
  }
  return tags;
}

size_t DiskCache::purge(const purge::Request& r, int64_t now_ms) {
  auto keys = purges_.apply(r, now_ms);
  if (r.soft || keys.empty()) return keys.size();
  journal_purge(r);
  for (const auto& k : keys) {
    if (auto it = index_.find(k); it != index_.end()) remove_entry(it, false);
  }
  const size_t n = keys.size();
  {
    std::lock_guard lock(io_.mu);
    for (auto& k : keys) {
      ++io_.doomed[k];
      Job job;
      job.kind = Job::Kind::Purged;
      job.id = std::move(k);
      io_.queue.push_back(std::move(job));
    }
  }
  io_.cv.notify_one();
  return n;
}

bool DiskCache::purged_since(uint64_t generation, const std::string& key,
                             const cache::Stored& stored, int64_t now_ms) {
  return purges_.purged_since(generation, key, tags_of(stored), now_ms);
}

}  // namespace cdn::replica
