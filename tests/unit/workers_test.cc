// SPDX-License-Identifier: MIT
// The workers' shared parts, run under ThreadSanitizer by scripts/run-tests:
// a snapshot published by one thread and read by others, work posted
// between loops, the heartbeat the watchdog goes by.
#include "daemons/workers.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace cdn::daemon {
namespace {

struct Value {
  uint64_t n = 0;
  std::vector<uint64_t> copies;  // all equal to n: a torn value would show
};

TEST(Board, ReadersSeeWholeValuesAndTheLast) {
  Board<Value> board;
  board.publish(std::make_shared<const Value>(Value{0, std::vector<uint64_t>(64, 0)}));
  constexpr uint64_t kLast = 2000;
  std::atomic<bool> bad{false};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&] {
      std::shared_ptr<const Value> held;
      uint64_t seen = 0, last = 0;
      while (last != kLast) {
        if (!board.refresh(held, seen)) continue;
        if (held->n < last) bad = true;  // never goes back
        for (uint64_t c : held->copies) {
          if (c != held->n) bad = true;
        }
        last = held->n;
      }
    });
  }
  for (uint64_t n = 1; n <= kLast; ++n) {
    board.publish(std::make_shared<const Value>(Value{n, std::vector<uint64_t>(64, n)}));
  }
  for (auto& t : readers) t.join();
  EXPECT_FALSE(bad);
  std::shared_ptr<const Value> held;
  uint64_t seen = 0;
  EXPECT_TRUE(board.refresh(held, seen));
  EXPECT_FALSE(board.refresh(held, seen));  // nothing new: no lock taken
  EXPECT_EQ(held->n, kLast);
}

TEST(WorkerThreads, PostCallAndOrderedRuns) {
  WorkerThreads threads(2);
  std::vector<int> order;  // touched by worker 0's thread only, read after call()
  for (int i = 0; i < 100; ++i) threads.post(0, [&order, i] { order.push_back(i); });
  threads.call(0, [] {});
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[static_cast<size_t>(i)], i);
  EXPECT_THROW(threads.call(1, [] { throw std::runtime_error("refused"); }), std::runtime_error);
  std::thread::id where;
  threads.call(1, [&] { where = std::this_thread::get_id(); });
  EXPECT_NE(where, std::this_thread::get_id());
}

TEST(WorkerThreads, HeartbeatStopsWhileALoopStalls) {
  WorkerThreads threads(2);
  const auto start = std::chrono::steady_clock::now();
  const auto wait_beats = [&](std::chrono::steady_clock::time_point since) {
    for (int i = 0; i < 200 && !threads.all_beat_since(since); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return threads.all_beat_since(since);
  };
  EXPECT_TRUE(wait_beats(start));
  std::atomic<bool> release{false};
  threads.post(1, [&] {
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  });
  std::this_thread::sleep_for(kBeatEvery * 3);
  const auto stalled_since = std::chrono::steady_clock::now() - kBeatEvery;
  EXPECT_FALSE(threads.all_beat_since(stalled_since));
  release = true;
  EXPECT_TRUE(wait_beats(std::chrono::steady_clock::now()));
}

TEST(WorkerThreads, StopRunsAtExitOnEachThread) {
  std::vector<std::thread::id> ids(3);
  {
    WorkerThreads threads(3);
    threads.stop([&](size_t i) { ids[i] = std::this_thread::get_id(); });
    threads.stop();  // twice: harmless
  }
  for (const auto& id : ids) EXPECT_NE(id, std::thread::id());
  EXPECT_NE(ids[0], ids[1]);
}

}  // namespace
}  // namespace cdn::daemon
