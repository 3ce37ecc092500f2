// SPDX-License-Identifier: MIT
// net::DeadlineHeap, the connections' deadlines behind one timer: nodes come
// due in order of their deadlines whatever order they were set, moved or
// taken out in, checked against a plain sorted model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "common/net/deadlines.hpp"

namespace cdn::net {
namespace {

using Node = DeadlineHeap::Node;

TEST(DeadlineHeap, EmptyHasNothingDue) {
  DeadlineHeap h;
  EXPECT_EQ(h.next_due(), DeadlineHeap::kNever);
  EXPECT_EQ(h.pop_due(UINT64_MAX - 1), nullptr);
}

TEST(DeadlineHeap, PopsDueNodesSoonestFirstAndKeepsTheRest) {
  DeadlineHeap h;
  Node a, b, c;
  h.set(a, 30);
  h.set(b, 10);
  h.set(c, 20);
  EXPECT_EQ(h.next_due(), 10u);
  EXPECT_EQ(h.pop_due(9), nullptr);
  EXPECT_EQ(h.pop_due(25), &b);
  EXPECT_FALSE(b.scheduled());
  EXPECT_EQ(h.pop_due(25), &c);
  EXPECT_EQ(h.pop_due(25), nullptr);
  EXPECT_TRUE(a.scheduled());
  EXPECT_EQ(h.next_due(), 30u);
  h.remove(a);
  h.remove(a);  // twice: nothing
  EXPECT_EQ(h.size(), 0u);
}

TEST(DeadlineHeap, MovingANodeSoonerOrLaterReordersIt) {
  DeadlineHeap h;
  Node a, b, c;
  h.set(a, 10);
  h.set(b, 20);
  h.set(c, 30);
  h.set(a, 40);  // later
  h.set(c, 5);   // sooner
  EXPECT_EQ(h.pop_due(100), &c);
  EXPECT_EQ(h.pop_due(100), &b);
  EXPECT_EQ(h.pop_due(100), &a);
}

// Random sets, moves and removals of 300 nodes; after each step the heap's
// soonest deadline is the model's, and at the end everything pops in order.
TEST(DeadlineHeap, AgreesWithASortedModel) {
  std::mt19937_64 rng(7);
  std::vector<Node> nodes(300);
  DeadlineHeap h;
  auto model_next = [&] {
    uint64_t next = DeadlineHeap::kNever;
    for (const Node& n : nodes) {
      if (n.scheduled()) next = std::min(next, n.due);
    }
    return next;
  };
  for (int step = 0; step < 20'000; ++step) {
    Node& n = nodes[rng() % nodes.size()];
    if (rng() % 4 == 0) {
      h.remove(n);
    } else {
      h.set(n, rng() % 1000);
    }
    ASSERT_EQ(h.next_due(), model_next()) << "step " << step;
    if (step % 1000 == 999) {
      // Pop what is due at some time: each is due, none is left due.
      const uint64_t now = rng() % 1000;
      while (Node* due = h.pop_due(now)) {
        ASSERT_LE(due->due, now);
        ASSERT_FALSE(due->scheduled());
      }
      ASSERT_GT(h.next_due(), now);
    }
  }
  uint64_t last = 0;
  size_t popped = 0;
  const size_t left = h.size();
  while (Node* n = h.pop_due(UINT64_MAX - 1)) {
    EXPECT_GE(n->due, last);
    last = n->due;
    ++popped;
  }
  EXPECT_EQ(popped, left);
}

}  // namespace
}  // namespace cdn::net
