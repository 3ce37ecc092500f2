// SPDX-License-Identifier: MIT
// Where cdn-get's body bytes go on their way into the temp file.
//
// A plain write() per received piece costs a copy into the page cache, and
// the final fsync then has the whole file to write back. Instead the body is
// copied into page-aligned blocks that one writer thread stores with O_DIRECT
// while the loop keeps receiving: no page-cache copy, and the fsync that makes
// the file durable has only the tail (and the metadata) left. A file system
// that refuses O_DIRECT gets ordinary writes from the same thread, each block's
// writeback started at once (sync_file_range), for the same effect on fsync.
//
// Ownership: the sink writes to a descriptor it does not own; destroy the
// sink (which joins its thread) before closing the descriptor. Not
// thread-safe: one caller (the event loop) calls every member.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace cdn::get {

class FileSink {
 public:
  // Big enough that a direct write is one large request; four of them keep
  // the disk busy while the next block fills.
  static constexpr size_t kBlock = 1 << 20;
  static constexpr size_t kBlocks = 4;

  // `start`: the file offset of the first byte appended (a resumed download).
  explicit FileSink(int fd, off_t start = 0);
  ~FileSink();
  FileSink(const FileSink&) = delete;
  FileSink& operator=(const FileSink&) = delete;

  // Queue the bytes after everything appended so far. False once any write
  // has failed (the reason in error()); a later write error may only show
  // here or in finish().
  bool append(std::string_view piece);
  // Forget everything (a replica sent the whole body again): waits for
  // pending writes, truncates the file to 0.
  bool restart();
  // Everything appended is in the file (on disk or in the page cache with its
  // writeback started); the caller still fsyncs. Nothing may be appended after.
  bool finish();
  // errno of the first failed write or truncate; 0 when none.
  int error() const { return error_.load(); }
  // Whether the blocks went out with O_DIRECT (tests and logs).
  bool direct() const { return direct_.load(); }

 private:
  struct Job {
    size_t block;
    off_t offset;
    size_t length;
  };
  struct FreeAligned {
    void operator()(unsigned char* p) const noexcept;
  };
  using Block = std::unique_ptr<unsigned char, FreeAligned>;

  bool submit_current();
  bool drain();
  void writer_loop();
  // Blocking, on whichever thread holds the descriptor at the time.
  int write_block(const unsigned char* data, size_t length, off_t offset);
  bool set_direct(bool on);

  int fd_;
  std::array<Block, kBlocks> blocks_;
  size_t current_ = 0;                // the block being filled (owned by the caller's thread)
  size_t fill_ = 0;                   // bytes in it
  off_t base_ = 0;                    // file offset of its first byte
  std::atomic<bool> direct_ = false;  // cleared by the writer if O_DIRECT is refused

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;       // guarded by mu_
  std::deque<size_t> free_;     // guarded by mu_: blocks neither filling nor queued
  size_t in_flight_ = 0;        // guarded by mu_: jobs popped, not yet written
  std::atomic<int> error_ = 0;  // first failure wins
  bool stop_ = false;           // guarded by mu_
  std::thread writer_;          // started by the first full block
};

}  // namespace cdn::get
