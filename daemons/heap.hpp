// SPDX-License-Identifier: MIT
// Giving freed heap memory back to the kernel. glibc's malloc returns memory
// to the kernel only from the top of a heap; what a burst of connections
// freed below the ones still open (a TLS handshake's buffers, tens of KiB
// each while it waits for the client), or what closed connections left,
// stays in the process's RSS until malloc_trim(). Once a second the daemon
// asks how much its heaps hold free, and trims when that grew by `slack`
// over the least it held since the last trim (Lifecycle's status timer).
#pragma once

#include <algorithm>
#include <cstddef>

namespace cdn::daemon {

// Pure: when to trim, from the free bytes the allocator reports.
class HeapTrim {
 public:
  explicit HeapTrim(size_t slack) : slack_(slack) {}
  // The allocator holds `free_now` bytes free (in use by nobody). True: trim
  // now. What was trimmed stays counted as free, so the base is the least
  // seen since: memory taken again and freed again is trimmed again.
  bool due(size_t free_now) {
    base_ = std::min(base_, free_now);
    return free_now >= base_ + slack_;
  }
  // After a trim: what is free now is the new base.
  void trimmed(size_t free_now) { base_ = free_now; }

 private:
  size_t slack_;
  size_t base_ = 0;
};

// The adapter (glibc): bytes the heaps hold free (mallinfo2's fordblks),
// and malloc_trim(0). Where the allocator is not glibc's (a sanitizer's),
// the free bytes read 0 and nothing is ever trimmed.
size_t heap_free_bytes();
void trim_heap();

}  // namespace cdn::daemon
