// SPDX-License-Identifier: MIT
#include "common/net/deadlines.hpp"

namespace cdn::net {

void DeadlineHeap::set(Node& n, uint64_t due) {
  if (!n.scheduled()) {
    heap_.push_back(&n);
    n.at = heap_.size() - 1;
    n.due = due;
    up(n.at);
    return;
  }
  const uint64_t was = n.due;
  n.due = due;
  if (due < was) {
    up(n.at);
  } else {
    down(n.at);
  }
}

void DeadlineHeap::remove(Node& n) {
  if (!n.scheduled()) return;
  const size_t i = n.at;
  Node* last = heap_.back();
  heap_.pop_back();
  n.at = kOut;
  if (last == &n) return;
  place(i, last);
  // The last node may belong above or below the slot it fills.
  up(i);
  down(last->at);
}

DeadlineHeap::Node* DeadlineHeap::pop_due(uint64_t now) {
  if (heap_.empty() || heap_.front()->due > now) return nullptr;
  Node* n = heap_.front();
  remove(*n);
  return n;
}

void DeadlineHeap::up(size_t i) {
  Node* n = heap_[i];
  while (i > 0) {
    const size_t parent = (i - 1) / 2;
    if (heap_[parent]->due <= n->due) break;
    place(i, heap_[parent]);
    i = parent;
  }
  place(i, n);
}

void DeadlineHeap::down(size_t i) {
  Node* n = heap_[i];
  const size_t size = heap_.size();
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= size) break;
    if (child + 1 < size && heap_[child + 1]->due < heap_[child]->due) ++child;
    if (n->due <= heap_[child]->due) break;
    place(i, heap_[child]);
    i = child;
  }
  place(i, n);
}

}  // namespace cdn::net
