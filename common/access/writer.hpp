// SPDX-License-Identifier: MIT
// The access log's writer: lines come from the loops, a thread of its own
// writes them, so that a slow disk or a busy journal never stalls a loop
// (nginx's `buffer=`/`flush=`, with the write moved off the event loop).
//
// Threads: any thread may call write() (every loop of a daemon with worker
// threads shares one Writer): lines are appended to one buffer under a
// mutex, held only for the copy. The writer thread swaps the buffer out and
// writes it whole (one write(2) per batch) when it holds flush_bytes, or
// flush_interval after the first line waiting, or at close. A buffer
// grown past max_buffer (the disk stopped taking lines) drops new lines and
// counts them rather than grow without bound.
//
// Ownership: the daemon owns the Writer; its destructor writes what is
// left and joins the thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace cdn::access {

struct WriterOptions {
  // A file path, or "journal" (one journal entry a line, SYSLOG_IDENTIFIER
  // `identifier`, field CDN_ACCESS=1; stderr when built without systemd).
  std::string target;
  std::string identifier = "cdn";
  size_t flush_bytes = 64 * 1024;
  std::chrono::milliseconds flush_interval{1000};
  size_t max_buffer = 16 * 1024 * 1024;
};

class Writer {
 public:
  // Opens the file (O_APPEND, created 0640) before returning: a path that
  // cannot be opened throws std::runtime_error, at start-up or on reload.
  explicit Writer(WriterOptions options);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // One or more complete lines, each ending in '\n'.
  void write(std::string_view lines);
  // SIGHUP after logrotate moved the file: the writer thread writes what it
  // holds to the old file and reopens the path before the next batch.
  void reopen();
  // Lines dropped because the buffer was full; batches that failed to write.
  uint64_t dropped_lines() const;
  uint64_t failed_writes() const;
  const WriterOptions& options() const { return options_; }

 private:
  void run();
  void write_batch(const std::string& batch);
  int open_file() const;

  WriterOptions options_;
  bool journal_ = false;
  int fd_ = -1;  // the writer thread's, after construction

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::string buffer_;  // lines waiting, under mutex_
  bool stop_ = false;
  bool reopen_ = false;
  // buffer_'s size when reopen() was called: the lines before it go to the
  // old file, those after to the new one, however late the thread wakes.
  size_t reopen_at_ = 0;
  uint64_t dropped_ = 0;
  uint64_t failed_ = 0;
  std::chrono::steady_clock::time_point first_waiting_{};
  std::thread thread_;
};

}  // namespace cdn::access
