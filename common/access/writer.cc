// SPDX-License-Identifier: MIT
#include "common/access/writer.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "cdn_config.h"
#if CDN_HAVE_SYSTEMD
#include <systemd/sd-journal.h>
#endif

namespace cdn::access {

Writer::Writer(WriterOptions options) : options_(std::move(options)) {
  journal_ = options_.target == "journal";
  if (!journal_) {
    fd_ = open_file();
    if (fd_ < 0) {
      throw std::runtime_error("cannot open the access log " + options_.target + ": " +
                               std::strerror(errno));
    }
  }
  buffer_.reserve(options_.flush_bytes * 2);
  thread_ = std::thread([this] { run(); });
}

Writer::~Writer() {
  {
    const std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();
  if (fd_ >= 0) ::close(fd_);
}

int Writer::open_file() const {
  return ::open(options_.target.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

void Writer::write(std::string_view lines) {
  bool wake = false;
  {
    const std::lock_guard lock(mutex_);
    if (buffer_.size() + lines.size() > options_.max_buffer) {
      ++dropped_;
      return;
    }
    // The first line of a batch starts the flush_interval clock (and wakes
    // the writer, which then waits for the batch to fill or time out).
    wake = buffer_.empty();
    if (wake) first_waiting_ = std::chrono::steady_clock::now();
    buffer_.append(lines);
    wake = wake || buffer_.size() >= options_.flush_bytes;
  }
  if (wake) wake_.notify_one();
}

void Writer::reopen() {
  {
    const std::lock_guard lock(mutex_);
    reopen_ = true;
    reopen_at_ = buffer_.size();
  }
  wake_.notify_one();
}

uint64_t Writer::dropped_lines() const {
  const std::lock_guard lock(mutex_);
  return dropped_;
}

uint64_t Writer::failed_writes() const {
  const std::lock_guard lock(mutex_);
  return failed_;
}

void Writer::run() {
  std::string batch;
  std::unique_lock lock(mutex_);
  for (;;) {
    if (buffer_.empty() && !stop_ && !reopen_) {
      wake_.wait(lock, [this] { return stop_ || reopen_ || !buffer_.empty(); });
    }
    if (!buffer_.empty() && buffer_.size() < options_.flush_bytes && !stop_ && !reopen_) {
      // Wait for more lines until the first one has waited flush_interval.
      const auto due = first_waiting_ + options_.flush_interval;
      wake_.wait_until(
          lock, due, [this] { return stop_ || reopen_ || buffer_.size() >= options_.flush_bytes; });
      if (std::chrono::steady_clock::now() < due && !stop_ && !reopen_ &&
          buffer_.size() < options_.flush_bytes) {
        continue;  // woken early for nothing
      }
    }
    batch.swap(buffer_);
    const bool reopen = std::exchange(reopen_, false);
    const bool stop = stop_;
    // Lines logged after the reopen was asked for (a request answered once
    // the SIGHUP was handled) belong in the new file.
    std::string after;
    if (reopen && reopen_at_ < batch.size()) {
      after.assign(batch, reopen_at_);
      batch.resize(reopen_at_);
    }
    lock.unlock();
    if (!batch.empty()) write_batch(batch);
    batch.clear();
    if (reopen && !journal_) {
      const int fd = open_file();
      if (fd < 0) {
        spdlog::error("access log: cannot reopen {} ({}): still writing to the old file",
                      options_.target, std::strerror(errno));
      } else {
        ::close(fd_);
        fd_ = fd;
      }
    }
    if (!after.empty()) write_batch(after);
    lock.lock();
    if (stop && buffer_.empty()) return;
  }
}

void Writer::write_batch(const std::string& batch) {
  if (journal_) {
#if CDN_HAVE_SYSTEMD
    const std::string id = "SYSLOG_IDENTIFIER=" + options_.identifier;
    size_t pos = 0;
    while (pos < batch.size()) {
      size_t nl = batch.find('\n', pos);
      if (nl == std::string::npos) nl = batch.size();
      const std::string msg = "MESSAGE=" + batch.substr(pos, nl - pos);
      iovec iov[4] = {
          {const_cast<char*>(msg.data()), msg.size()},
          {const_cast<char*>(id.data()), id.size()},
          {const_cast<char*>("PRIORITY=6"), 10},
          {const_cast<char*>("CDN_ACCESS=1"), 12},
      };
      if (sd_journal_sendv(iov, 4) < 0) {
        const std::lock_guard lock(mutex_);
        ++failed_;
      }
      pos = nl + 1;
    }
    return;
#else
    fd_ = STDERR_FILENO;
#endif
  }
  size_t done = 0;
  while (done < batch.size()) {
    const ssize_t n = ::write(fd_, batch.data() + done, batch.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::lock_guard lock(mutex_);
      ++failed_;
      return;
    }
    done += static_cast<size_t>(n);
  }
}

}  // namespace cdn::access
