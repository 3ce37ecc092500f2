// SPDX-License-Identifier: MIT
// Many deadlines behind one timer: a binary min-heap of nodes that each know
// their slot, so a node is moved or taken out in O(log n).
//
// Why: every connection has a deadline (header, idle or send timeout), and a
// libuv timer handle per connection cost an idle connection about a quarter
// of a KiB; a node here is 16 bytes in the connection and a pointer in the
// heap. Pure: the caller owns the one timer (next_due()) and the clock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace cdn::net {

class DeadlineHeap {
 public:
  static constexpr uint64_t kNever = UINT64_MAX;
  static constexpr size_t kOut = SIZE_MAX;

  // Lives in what it times (a connection); must be taken out (remove())
  // before it is destroyed.
  struct Node {
    uint64_t due = kNever;
    size_t at = kOut;  // slot in the heap; kOut when not in it
    bool scheduled() const { return at != kOut; }
  };

  // Puts `n` in the heap due at `due`, or moves it there.
  void set(Node& n, uint64_t due);
  // Takes `n` out (nothing when it is not in).
  void remove(Node& n);
  // The soonest deadline; kNever when the heap is empty.
  uint64_t next_due() const { return heap_.empty() ? kNever : heap_.front()->due; }
  // A node due at or before `now`, taken out; null when none is.
  Node* pop_due(uint64_t now);
  size_t size() const { return heap_.size(); }

 private:
  void place(size_t i, Node* n) {
    heap_[i] = n;
    n->at = i;
  }
  void up(size_t i);
  void down(size_t i);

  std::vector<Node*> heap_;
};

}  // namespace cdn::net
