// SPDX-License-Identifier: MIT
// The edge cache's storage: pulled objects on disk in `dir`, an index in
// memory, LRU eviction beyond `max_bytes`, and a memory tier holding the
// bodies of small hot objects (up to `memory_bytes` in all).
//
// Variants (variants.hpp): a URL's key holds up to `max_variants` stored
// responses, each under its id (the key, or key NUL variant for a response
// with Vary); a lookup gives the one the request selects. Beyond the bound
// the URL's least recently used variant goes; removing a URL (invalidation,
// purge) removes all of them.
//
// Bounds: `max_bytes` counts each entry's disk blocks, `max_entries` the
// entries whatever their size (each costs an index entry in memory and two
// files), both least-recently-used across all URLs.
//
// Layout: <dir>/<h>.body and <dir>/<h>.meta (JSON: format version, key,
// variant, validators, freshness inputs, header fields, size, sha-256
// digest), h = hex sha-256 of the id; a meta of another format version is
// dropped at start (counted in outdated_dropped()), never read as this one;
// bodies are written to <dir>/tmp/ first. A commit is: body rename, then
// meta written and renamed the same way, then the body, the meta and the
// directory fsynced; all of it on the cache's own thread (a job), so that
// the loop never waits for the disk: the loop only updates the index. The
// thread runs its jobs (commits, meta rewrites of refresh(), removals of
// entries whose jobs are pending, purges' removals) one at a time in the
// order queued, so that a removal queued after a commit of the same id
// always comes after its renames (nothing comes back). Until the thread
// reports a commit (reap()), the entry serves from a descriptor of its body
// kept open (whatever name the file has meanwhile); a commit that fails
// there drops the entry when reap() hears of it (one line for the log,
// counted in write_errors()). A crash or a full disk leaves at worst a temp file
// (removed at start) or a body whose meta does not match it (or whose bytes
// never reached the disk): at start every entry is read back and checked
// against its digest, and one that fails is deleted (and refetched when
// asked for). Nothing here touches the event loop; all calls but
// Options::wake are on the loop thread.
//
// Objects handed out are immutable and shared (store.hpp's Object): a
// response in flight keeps its Object and its open file descriptor, so
// eviction or replacement never cuts a transfer short.
//
// The bound (max_bytes, cache_size) is on disk blocks, counted as du counts
// them: the entries' (body rounded up to block_size, plus a block for the
// meta), the bodies being received (reserved by their Content-Length when
// they have one, else as their bytes arrive), and the body files no longer
// the cache's (evicted, replaced, purged, spilled, not stored) that some
// answer still reads: an unlinked file keeps its blocks until its last
// descriptor closes, so its bytes stay counted until the last Object (or
// writer) holding it lets go (Blocks, shared through Object::hold).
// Eviction takes the least recently used entries that nobody is reading
// (evicting one being read would free nothing); a body that cannot be given
// room is not written to disk at all (held in memory within spill_limit,
// answered, not stored).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
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
#include "daemons/replicad/variants.hpp"

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
    // Bodies that cannot go to disk (disk full, or no room within
    // max_bytes while others are in flight) are held in memory up to this,
    // all writers together; past it a fill fails.
    uint64_t spill_limit = 64ULL << 20;
    // The unit of disk use: an entry costs its body rounded up to it, plus
    // one for its meta, so that many tiny entries cannot pass max_bytes in
    // blocks (40,000 entries of a few bytes are 312 MiB of 4 KiB blocks).
    uint64_t block_size = 4096;
    // Entries held at most, and stored responses (variants) per URL.
    size_t max_entries = 100'000;
    size_t max_variants = 8;
    // Called on the cache's thread when jobs it ran have outcomes for the
    // loop (once until reap() takes them): the owner has its loop call
    // reap() soon. Must not block. Empty: the owner calls reap() itself.
    std::function<void()> wake;
    // Tests: runs on the cache's thread before each commit or meta job
    // (holding it there widens the window between commit() and the files).
    std::function<void()> before_job;
    // Tests: runs on the fsync thread before each batch of fsyncs (holding
    // it there stands for a slow disk).
    std::function<void()> before_sync;
  };

  // The blocks of one body file (see above). Shared by the writer, the
  // entry and every Object made for answering from that file; `charge` is
  // what it still counts once the cache let go of the file, given back by
  // the last holder (on whatever thread that is).
  struct Blocks {
    std::weak_ptr<std::atomic<uint64_t>> pool;
    uint64_t charge = 0;
    Blocks() = default;
    Blocks(const Blocks&) = delete;
    Blocks& operator=(const Blocks&) = delete;
    ~Blocks();
  };

  struct Entry {
    EntryMeta meta;
    std::shared_ptr<const Object> object;  // rel = the body's absolute path
    std::shared_ptr<Blocks> blocks;        // also object->hold
    std::list<std::string>::iterator lru;  // position in lru_ (front = most recent)
    std::string id;                        // variants::id_of(meta.key, meta.stored.variant)
    uint64_t gen = 0;                      // this entry of `id` (jobs and their outcomes name it)
    uint32_t jobs = 0;                     // jobs queued for it whose outcome reap() has not had
    // The body while its commit job is not reaped: open() hands out
    // duplicates, whatever name the file has meanwhile. Closed with it.
    std::shared_ptr<const int> body_fd;
  };

  // A body being received. Written to a temp file and hashed as it arrives;
  // small bodies are also kept in memory. Its blocks count against
  // max_bytes while it is received: all of its Content-Length at begin()
  // when known, else as its bytes arrive (least recently used entries
  // nobody reads are evicted to make room). If the disk fails (EIO; ENOSPC
  // when evicting once cannot make room), or no room can be made within
  // max_bytes, the bytes so far are read back and the rest is kept in
  // memory within spill_limit (shared by every writer): the waiting clients
  // still get their answer, nothing is stored. Destroying an uncommitted
  // writer removes its temp file; its blocks stay counted while streaming
  // answers still read it (Blocks). Must not outlive its DiskCache.
  class Writer {
   public:
    ~Writer();
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;
    // False when the body can be neither written nor held (over spill_limit).
    bool write(const char* data, size_t n);
    // From now on the body is neither written nor held, only hashed and
    // counted (the caller passes it on to its streaming clients): what it
    // held goes, disk and memory. Never stored; object() has no body.
    void pass();
    bool passing() const { return passing_; }

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
    // An Object for answering from this body when it is not stored (after
    // finish()): a body in memory is moved into it, and a spilled one keeps
    // counting against spill_limit until the last answer lets it go.
    std::shared_ptr<Object> object();
    // What an Object answering from this writer's file must hold
    // (Object::hold), so that its blocks stay counted while it is read.
    std::shared_ptr<const void> hold() const { return blocks_; }

   private:
    friend class DiskCache;
    Writer() = default;
    // The disk failed or has no room: the body goes on in memory.
    bool spill(const char* data, size_t n);
    // Closes and unlinks the temp file; its reservation is given back (its
    // blocks stay counted while streaming answers read it).
    void drop_file();
    DiskCache* cache_ = nullptr;
    uint64_t reserved_ = 0;  // bytes counted in the cache's in-flight total
    std::shared_ptr<Blocks> blocks_;
    uint64_t spill_held_ = 0;  // bytes counted in the cache's spill pool
    int fd_ = -1;
    std::string tmp_path_;
    uint64_t size_ = 0;
    uint64_t memory_limit_ = 0;
    uint64_t spill_limit_ = 0;
    bool keep_memory_ = true;
    bool spilled_ = false;
    bool committed_ = false;
    bool passing_ = false;
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
  // On the loop: applies what the cache's thread reported (commits done:
  // the entry's descriptor closes; failed: the entry goes, its blocks
  // released, counted in write_errors()). Returns a line per failure, for
  // the caller's log. See Options::wake.
  std::vector<std::string> reap();
  // Waits until the cache's thread has run every job queued so far (not
  // their fsyncs), then reap(): at close, and in tests.
  std::vector<std::string> settle();
  // Commit and meta jobs whose outcome reap() has not had.
  size_t jobs_pending() const { return unreaped_; }

  // The entry of `key` that `request` selects (variants::select), marked
  // as just used; nullptr on a miss. Without `request`: a request with no
  // fields (what a prefetch asks).
  const Entry* find(const std::string& key, http::Fields request = {});
  const Entry* peek(const std::string& key, http::Fields request = {}) const;
  // One stored response by its variant (not a selection); nullptr when gone.
  const Entry* peek_variant(const std::string& key, const std::string& variant) const;
  // Whether the URL holds any variant (a miss of them all is a vary-miss).
  bool holds(const std::string& key) const { return !variants_.of(key).empty(); }
  // A descriptor of the entry's body for sending; -1 (errno) when it is gone.
  int open(const Entry& e) const;

  // Has the cache's thread open a temp file for the next begin() when none
  // is ready (and the last was taken): a miss then does not wait for an
  // open() in tmp/ (a directory lock, tens of ms under a flood of commits)
  // before its first bytes go out. Called by the owner once the work a
  // client waits on is done (the thread would take the CPU from it);
  // without calls, begin() opens its own. The spare is empty (no blocks
  // counted); removed when the cache closes, or at the next start.
  void keep_spare();

  // A writer for a new body; nullptr with errno set when no temp file can be
  // made. `length`: the body's size when known (the origin's
  // Content-Length), reserved at once; when it cannot be given room, the
  // writer holds the body in memory from its first byte (disk_error() says
  // why) and it is not stored.
  std::unique_ptr<Writer> begin(std::optional<uint64_t> length = std::nullopt);
  // Stores a finished body under meta.key as the variant
  // meta.stored.variant (size, digest and etag filled in from the writer
  // when empty), replacing an older copy of that variant, dropping the
  // URL's least recently used variant past max_variants and evicting the
  // least recently used entries nobody reads to stay within max_bytes (and
  // any past max_entries). Returns the entry (its files are made by the
  // cache's thread; a failure there is reap()'s to handle), or nullptr
  // (errno set; logged by the caller) when it cannot be stored: larger than
  // max_bytes (EFBIG), spilled to memory, or no descriptor left.
  const Entry* commit(Writer& w, EntryMeta meta);
  // A 304 refreshed the stored response `key`, stored.variant: new header
  // lines and times (meta rewritten).
  const Entry* refresh(const std::string& key, const cache::Stored& stored);
  // Removes one variant of `key`.
  void erase(const std::string& key, const std::string& variant);
  // Removes every variant of `key` (invalidation, RFC 9111 §4.4).
  void erase_all(const std::string& key);

  // Purges (common/purge/index.hpp), the request's paths in key form
  // (encoded as keys are). Hard: the objects leave the index at once (never
  // served again) and their files are removed by the cache's thread, after
  // any job queued before (unlinking 200,000 files takes minutes on a busy
  // disk; the loop must not wait for it); the purge is first appended to
  // <dir>/purges.journal (fsynced), so that a restart before the files are
  // gone drops every object a journalled purge names that was stored before
  // it. The journal is emptied by the next purge that finds no removal
  // pending. Soft: marked stale until stored or refreshed again (not kept
  // over a restart). Returns how many objects it named. An object's tags are
  // its stored Surrogate-Key and Cache-Tag fields.
  size_t purge(const purge::Request& r, int64_t now_ms);
  bool soft_purged(const Entry& e) const { return purges_.stale(e.id); }
  uint64_t purge_generation() const { return purges_.generation(); }
  // A fetch that started at `generation` brought `stored` for `key`: did
  // a hard purge since name it? (Then it is served but not stored.)
  bool purged_since(uint64_t generation, const std::string& key, const cache::Stored& stored,
                    int64_t now_ms);
  size_t tags() const { return purges_.tag_count(); }
  static std::vector<std::string> tags_of(const cache::Stored& stored);

  // The figures are read by every worker's pages (OwnCounter: one writer).
  uint64_t bytes() const { return bytes_; }
  // What max_bytes bounds: the entries' blocks (block_size), the bodies
  // being received, and the files let go of that answers still read.
  uint64_t disk_bytes() const { return footprint_ + inflight_ + open_pool_->load(); }
  // The last of those alone.
  uint64_t released_open_bytes() const { return open_pool_->load(); }
  uint64_t spilled_bytes() const { return spill_pool_->load(); }
  uint64_t memory_bytes() const { return memory_used_; }
  size_t objects() const { return objects_; }
  // An estimate of the memory the index takes for its entries (keys,
  // stored header lines, the Object, map, list and purge index nodes), not
  // counting bodies in memory (memory_bytes()).
  uint64_t index_bytes() const { return index_bytes_; }
  uint64_t evictions() const { return evictions_; }
  uint64_t corrupt_dropped() const { return corrupt_; }
  uint64_t outdated_dropped() const { return outdated_; }
  uint64_t write_errors() const { return write_errors_; }
  const std::string& dir() const { return opt_.dir; }

  // The served ETag made from a digest's hex form (as the local store does).
  static std::string etag_of(const std::string& digest_hex);

 private:
  // The file of an entry by its id.
  std::string path_of(const std::string& id, const char* suffix) const;
  void load_all();
  enum class Load { Loaded, Corrupt, Outdated, Purged };
  // A file operation of the cache's thread; they run in the order queued.
  struct Job {
    enum class Kind {
      Commit,  // body renamed from `tmp`, meta written; `fd` (the body's) fsynced
      Meta,    // meta rewritten (refresh), when the body is there
      Unlink,  // an entry's files go (after its jobs)
      Purged,  // a purged entry's files go (counted in doomed; left to the journal at exit)
    };
    Kind kind = Kind::Unlink;
    std::string id;
    std::string key;   // Commit, Meta: for the log line
    uint64_t gen = 0;  // Commit, Meta: the entry's
    std::string tmp;   // Commit: the body's temp file
    std::string meta;  // Commit, Meta: the meta's text
    int fd = -1;       // Commit: the body, owned
  };
  // What a Commit or Meta job reports to reap().
  struct Outcome {
    Job::Kind kind = Job::Kind::Commit;
    std::string id, key;
    uint64_t gen = 0;
    int err = 0;            // errno of the step that failed; 0: done
    const char* step = "";  // which
  };
  // The cache's own thread and what it is handed (under mu).
  struct IoThread {
    std::mutex mu;
    std::condition_variable cv;    // work for the thread
    std::condition_variable idle;  // the queue ran dry (settle())
    std::deque<Job> queue;
    bool running = false;  // a job taken off the queue is under way
    std::vector<Outcome> done;
    // Purged ids whose files are still to go, with their Purged jobs queued.
    std::unordered_map<std::string, size_t> doomed;
    // keep_spare(): a temp file opened ahead for begin(), -1 when none.
    int spare_fd = -1;
    std::string spare_path;
    bool want_spare = false;
    bool stop = false;
    std::thread thread;
  };
  // The fsyncs of what the jobs wrote, on a thread of their own: a commit
  // (rename, meta) must not wait behind a batch of fsyncs on a busy disk,
  // or the files of evicted entries would wait with it, over cache_size.
  struct SyncThread {
    std::mutex mu;
    std::condition_variable cv;
    // Descriptors of files just written, to fsync then close, with the
    // directory after them. At most kMaxSyncs are held (descriptors are
    // the process's); past that one syncfs() of the cache's file system
    // does for the rest.
    std::vector<int> fds;
    bool all = false;
    bool stop = false;
    std::thread thread;
  };
  void queue_job(Job job);
  void io_loop();
  void sync_loop();
  // On the cache's thread, without io_.mu: a spare for keep_spare().
  void open_spare();
  // A new name in tmp/, unique in the process (a reload's cache on the
  // same directory must not take another's names).
  std::string tmp_name() const;
  // Runs a job on the cache's thread; the descriptors to fsync go to `syncs`.
  Outcome run_job(Job& job, std::vector<int>& syncs);
  // Holds `fd` (owned) for the fsync thread's next batch.
  void hold_sync(int fd);
  void journal_purge(const purge::Request& r);
  void read_journal();
  Load load_one(const std::string& meta_path);
  std::shared_ptr<const Object> make_object(const EntryMeta& m, const std::string& body_path,
                                            std::string body, bool in_memory);
  // On the cache's thread: `text` written to <meta>.tmp and renamed onto
  // the entry's meta; `fd` the new meta's descriptor (to fsync). Errno and
  // false when it fails (the temp file removed).
  bool put_meta(const std::string& id, const std::string& text, int& fd) const;
  void insert(EntryMeta meta, const std::string& body_path, std::string body, bool in_memory,
              std::shared_ptr<Blocks> blocks = nullptr);
  // The cache lets go of a body file: its `bytes` stay counted (open_pool_)
  // until the last holder of `b` lets go.
  void release(std::shared_ptr<Blocks>& b, uint64_t bytes);
  // An answer reads this entry (evicting it would free nothing now).
  static bool in_use(const Entry& e);
  // Evicts the least recently used entries nobody reads until `n` more
  // bytes fit within max_bytes; false when they cannot.
  bool make_room(uint64_t n);
  void remove_entry(std::unordered_map<std::string, Entry>::iterator it, bool unlink_files);
  void trim_memory();
  // Drops the least recently used entries beyond max_entries (being read or
  // not: the bound is on the index; their blocks stay counted while read).
  void evict_entries();
  static uint64_t index_cost(const Entry& e);
  uint64_t cost(uint64_t size) const;
  // Room for the writer's body to be `total` bytes on disk within max_bytes
  // (its blocks; evicting); false when it cannot be made.
  bool reserve(Writer& w, uint64_t total);
  // The disk is full: evicts entries to free about `n` bytes, when the
  // cache holds enough to make a difference. False: nothing evicted.
  bool evict_for_space(uint64_t n);

  Options opt_;
  int dir_fd_ = -1;
  std::unordered_map<std::string, Entry> index_;  // by id
  purge::Index purges_;                           // the ids of index_, ordered, with their tags
  // Hard purges journalled before a restart: (wall seconds, purge).
  std::vector<std::pair<int64_t, purge::Request>> journal_;
  IoThread io_;
  SyncThread sync_;
  uint64_t gen_counter_ = 0;
  size_t unreaped_ = 0;         // jobs_pending()
  std::list<std::string> lru_;  // ids
  variants::Lru variants_{8};   // set_max() from the options
  metrics::OwnCounter bytes_ = 0;
  uint64_t footprint_ = 0;  // sum of cost() of the entries
  uint64_t inflight_ = 0;   // writers' reservations
  // Blocks of files the cache let go of that answers still read (Blocks).
  std::shared_ptr<std::atomic<uint64_t>> open_pool_ = std::make_shared<std::atomic<uint64_t>>(0);
  // Bytes of bodies held in memory instead of on disk: writers' and those
  // of the Objects made from them (which may outlive the cache).
  // Atomic: the last answer holding such an Object may end on another
  // worker's loop.
  std::shared_ptr<std::atomic<uint64_t>> spill_pool_ = std::make_shared<std::atomic<uint64_t>>(0);
  metrics::OwnCounter memory_used_ = 0;
  metrics::OwnCounter objects_ = 0;  // index_.size()
  metrics::OwnCounter index_bytes_ = 0;
  metrics::OwnCounter evictions_ = 0;
  uint64_t corrupt_ = 0;
  uint64_t outdated_ = 0;
  metrics::OwnCounter write_errors_ = 0;
  // None asked for yet, or begin() took it or found none: keep_spare()
  // asks the thread for one.
  bool no_spare_ = true;
};

}  // namespace cdn::replica
