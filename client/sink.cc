// SPDX-License-Identifier: MIT
#include "client/sink.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <system_error>

namespace cdn::get {

namespace {
// O_DIRECT wants buffer, offset and length aligned to the device's logical
// block; a page covers every common device.
constexpr size_t kAlign = 4096;
static_assert(FileSink::kBlock % kAlign == 0);
}  // namespace

void FileSink::FreeAligned::operator()(unsigned char* p) const noexcept { std::free(p); }

FileSink::FileSink(int fd, off_t start) : fd_(fd), base_(start) {
  for (size_t i = 1; i < kBlocks; ++i) free_.push_back(i);
  // Refused (e.g. by a file system without direct I/O): page cache instead.
  direct_ = set_direct(true);
}

FileSink::~FileSink() {
  {
    std::lock_guard lock(mu_);
    queue_.clear();  // the file is being discarded or is complete: nothing left worth writing
    stop_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
}

bool FileSink::set_direct(bool on) {
  const int flags = fcntl(fd_, F_GETFL);
  if (flags < 0) return false;
  const int want = on ? (flags | O_DIRECT) : (flags & ~O_DIRECT);
  if (want != flags && fcntl(fd_, F_SETFL, want) != 0) return false;
  direct_ = on;
  return true;
}

bool FileSink::append(std::string_view piece) {
  while (!piece.empty()) {
    if (error_ != 0) return false;
    Block& block = blocks_[current_];
    if (!block) {
      block.reset(static_cast<unsigned char*>(std::aligned_alloc(kAlign, kBlock)));
      if (!block) {
        error_ = ENOMEM;
        return false;
      }
    }
    const size_t n = std::min(piece.size(), kBlock - fill_);
    std::memcpy(block.get() + fill_, piece.data(), n);
    fill_ += n;
    piece.remove_prefix(n);
    if (fill_ == kBlock && !submit_current()) return false;
  }
  return error_ == 0;
}

bool FileSink::submit_current() {
  std::unique_lock lock(mu_);
  if (!writer_.joinable()) {
    try {
      writer_ = std::thread([this] { writer_loop(); });
    } catch (const std::system_error&) {
      // No thread to be had: write in place, as a plain writer would.
      lock.unlock();
      const int err = write_block(blocks_[current_].get(), fill_, base_);
      if (err != 0) error_ = err;
      base_ += static_cast<off_t>(fill_);
      fill_ = 0;
      return err == 0;
    }
  }
  queue_.push_back(Job{current_, base_, fill_});
  base_ += static_cast<off_t>(fill_);
  fill_ = 0;
  cv_.notify_all();
  // Backpressure: with every block queued the loop waits for the disk (TCP
  // then holds the rest of the body in the socket buffers).
  cv_.wait(lock, [this] { return !free_.empty(); });
  current_ = free_.front();
  free_.pop_front();
  return error_ == 0;
}

void FileSink::writer_loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;
    const Job job = queue_.front();
    queue_.pop_front();
    ++in_flight_;
    lock.unlock();
    // After a failure the rest is not written: the download is lost anyway.
    const int err = error_ != 0 ? 0 : write_block(blocks_[job.block].get(), job.length, job.offset);
    lock.lock();
    if (err != 0 && error_ == 0) error_ = err;
    --in_flight_;
    free_.push_back(job.block);
    cv_.notify_all();
  }
}

int FileSink::write_block(const unsigned char* data, size_t length, off_t offset) {
  const off_t start = offset;
  size_t left = length;
  while (left > 0) {
    const ssize_t n = ::pwrite(fd_, data, left, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      // O_DIRECT taken at open but refused for this write (a device with
      // bigger blocks, a short write that left the offset unaligned): the
      // page cache takes this and every later block.
      if (errno == EINVAL && direct_ && set_direct(false)) continue;
      return errno;
    }
    data += n;
    left -= static_cast<size_t>(n);
    offset += n;
  }
  if (!direct_) {
    // Start the writeback now, so that the final fsync finds little dirty.
    // A failure here costs only time: fsync writes whatever is left.
    (void)sync_file_range(fd_, start, static_cast<off_t>(length), SYNC_FILE_RANGE_WRITE);
  }
  return 0;
}

bool FileSink::drain() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this] { return queue_.empty() && in_flight_ == 0; });
  return error_ == 0;
}

bool FileSink::finish() {
  if (!drain()) return false;
  if (fill_ > 0) {
    // The tail is shorter than a block, and O_DIRECT wants whole aligned
    // lengths: it goes through the page cache (the fsync writes it).
    if (direct_) set_direct(false);
    const int err = write_block(blocks_[current_].get(), fill_, base_);
    if (err != 0) {
      error_ = err;
      return false;
    }
    base_ += static_cast<off_t>(fill_);
    fill_ = 0;
  }
  return true;
}

bool FileSink::restart() {
  if (!drain()) return false;
  fill_ = 0;
  base_ = 0;
  if (ftruncate(fd_, 0) != 0) {
    error_ = errno;
    return false;
  }
  return true;
}

}  // namespace cdn::get
