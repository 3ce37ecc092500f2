// SPDX-License-Identifier: MIT
// FillProgress and next_fill_step (daemons/replicad/fill.hpp): the decisions
// of read-while-writer, with explicit times; and the wakes across threads
// (run under TSan by scripts/run-tests).
#include "daemons/replicad/fill.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace cdn::replica {
namespace {

using Kind = FillStep::Kind;

TEST(FillProgress, WakesOncePerTakeNotPerChunk) {
  FillProgress f(1000, 0);
  int wakes = 0;
  const auto id = f.subscribe([&] { ++wakes; });
  f.advance(100, 10);
  f.advance(200, 20);  // not taken since the last wake: no second wake
  EXPECT_EQ(wakes, 1);
  const auto v = f.take(id);
  EXPECT_EQ(v.available, 200u);
  EXPECT_EQ(v.last_progress_ms, 20);
  f.advance(300, 30);
  EXPECT_EQ(wakes, 2);
  f.advance(300, 40);  // no new byte: no news
  f.take(id);
  f.advance(250, 50);  // never backwards
  EXPECT_EQ(wakes, 2);
  EXPECT_EQ(f.view().available, 300u);
}

TEST(FillProgress, EndWakesAndDropsEveryWake) {
  FillProgress f(std::nullopt, 0);
  auto owned = std::make_shared<int>(7);
  int wakes = 0;
  const auto armed = f.subscribe([&, owned] { ++wakes; });
  const auto unarmed = f.subscribe([&, owned] { ++wakes; });
  f.advance(10, 1);  // both woken, neither takes
  EXPECT_EQ(wakes, 2);
  f.take(armed);
  f.finish();
  EXPECT_EQ(wakes, 3);              // only the armed one
  EXPECT_EQ(owned.use_count(), 1);  // both wakes let go: no cycle outlives the fill
  EXPECT_EQ(f.take(unarmed).state, FillProgress::State::Done);
  f.fail();  // after the end: nothing changes
  EXPECT_EQ(f.view().state, FillProgress::State::Done);
  f.unsubscribe(armed);
  f.unsubscribe(unarmed);
  EXPECT_EQ(f.subscribers(), 0u);
}

TEST(FillProgress, SubscriberAfterTheEndTakesTheState) {
  FillProgress f(5, 0);
  f.advance(5, 1);
  f.fail();
  int wakes = 0;
  const auto id = f.subscribe([&] { ++wakes; });
  EXPECT_EQ(f.take(id).state, FillProgress::State::Failed);
  EXPECT_EQ(wakes, 0);
}

TEST(NextFillStep, SendsWhatIsThereAndHoldsBackTheLastByte) {
  FillProgress::View v;
  v.length = 100;
  v.available = 40;
  EXPECT_EQ(next_fill_step(v, 0, std::nullopt).kind, Kind::Send);
  EXPECT_EQ(next_fill_step(v, 0, std::nullopt).length, 40u);
  EXPECT_EQ(next_fill_step(v, 40, std::nullopt).kind, Kind::Wait);
  v.available = 100;  // all there, not yet checked: the last byte waits
  const auto s = next_fill_step(v, 40, std::nullopt);
  EXPECT_EQ(s.kind, Kind::Send);
  EXPECT_EQ(s.offset, 40u);
  EXPECT_EQ(s.length, 59u);
  EXPECT_EQ(next_fill_step(v, 99, std::nullopt).kind, Kind::Wait);
  v.state = FillProgress::State::Done;
  EXPECT_EQ(next_fill_step(v, 99, std::nullopt).length, 1u);
  EXPECT_EQ(next_fill_step(v, 100, std::nullopt).kind, Kind::End);
}

TEST(NextFillStep, FirstPieceFromMemoryBeforeTheFileHoldsIt) {
  FillProgress::View v;
  v.length = 100;  // nothing written yet; the answer carries bytes 0..39
  auto s = next_fill_step(v, 0, std::nullopt, 40);
  EXPECT_EQ(s.kind, Kind::SendFirst);
  EXPECT_EQ(s.offset, 0u);
  EXPECT_EQ(s.length, 40u);
  EXPECT_EQ(next_fill_step(v, 40, std::nullopt, 40).kind, Kind::Wait);
  v.available = 70;  // the file from there on
  s = next_fill_step(v, 40, std::nullopt, 40);
  EXPECT_EQ(s.kind, Kind::Send);
  EXPECT_EQ(s.offset, 40u);
  EXPECT_EQ(s.length, 30u);
  // A range inside the first piece, and one across its end.
  v.available = 0;
  s = next_fill_step(v, 10, 20, 40);
  EXPECT_EQ(s.kind, Kind::SendFirst);
  EXPECT_EQ(s.length, 10u);
  EXPECT_EQ(next_fill_step(v, 20, 20, 40).kind, Kind::End);
  // The whole body in the first piece: its last byte waits for the check.
  FillProgress::View small;
  small.length = 40;
  s = next_fill_step(small, 0, std::nullopt, 40);
  EXPECT_EQ(s.kind, Kind::SendFirst);
  EXPECT_EQ(s.length, 39u);
  EXPECT_EQ(next_fill_step(small, 39, std::nullopt, 40).kind, Kind::Wait);
  small.state = FillProgress::State::Failed;  // the digest did not match
  EXPECT_EQ(next_fill_step(small, 39, std::nullopt, 40).kind, Kind::Cut);
  small.state = FillProgress::State::Done;
  small.available = 40;
  EXPECT_EQ(next_fill_step(small, 39, std::nullopt, 40).kind, Kind::SendFirst);
  EXPECT_EQ(next_fill_step(small, 40, std::nullopt, 40).kind, Kind::End);
}

TEST(NextFillStep, ChunkedSendsEverythingAndEndsOnlyWhenDone) {
  FillProgress::View v;
  v.available = 50;
  EXPECT_EQ(next_fill_step(v, 0, std::nullopt).length, 50u);
  EXPECT_EQ(next_fill_step(v, 50, std::nullopt).kind, Kind::Wait);
  v.state = FillProgress::State::Done;
  EXPECT_EQ(next_fill_step(v, 50, std::nullopt).kind, Kind::End);
}

TEST(NextFillStep, RangeEndsAsSoonAsItsBytesAreThere) {
  FillProgress::View v;
  v.length = 1000;
  v.available = 300;
  const auto s = next_fill_step(v, 100, 200);
  EXPECT_EQ(s.kind, Kind::Send);
  EXPECT_EQ(s.length, 100u);
  EXPECT_EQ(next_fill_step(v, 200, 200).kind, Kind::End);
  EXPECT_EQ(next_fill_step(v, 900, 1000).kind, Kind::Wait);
}

TEST(NextFillStep, FailedOrShortIsCut) {
  FillProgress::View v;
  v.length = 100;
  v.available = 60;
  v.state = FillProgress::State::Failed;
  EXPECT_EQ(next_fill_step(v, 0, std::nullopt).kind, Kind::Cut);
  v.state = FillProgress::State::Done;  // done, yet short of its length
  EXPECT_EQ(next_fill_step(v, 60, 100).kind, Kind::Cut);
}

TEST(NextFillStep, PastTheFilesEndFromMemory) {
  FillProgress f(std::nullopt, 0);
  f.advance(100, 1);
  f.spill(100);  // the disk failed: bytes 100.. are in memory
  f.spilled("abc");
  f.spilled("defg");
  f.advance(107, 2);
  const auto v = f.view();
  const auto s = next_fill_step(v, 40, std::nullopt);
  EXPECT_EQ(s.kind, Kind::Send);  // the file's part first, up to its end
  EXPECT_EQ(s.length, 60u);
  const auto m = next_fill_step(v, 100, std::nullopt);
  EXPECT_EQ(m.kind, Kind::SendMemory);
  EXPECT_EQ(m.length, 7u);
  auto [chunk, at] = f.memory_at(104);
  ASSERT_TRUE(chunk);
  EXPECT_EQ(chunk->substr(at), "efg");
  EXPECT_FALSE(f.memory_at(107).first);
  EXPECT_FALSE(f.memory_at(99).first);
}

// Passed through (no disk, no whole body in memory): only a window of the
// newest bytes is kept; a client that fell further behind is cut. Small
// pieces are gathered into one chunk while no reader holds it.
TEST(NextFillStep, PassedThroughKeepsAWindow) {
  FillProgress f(10, 0);
  f.spill(0);  // never on disk
  f.spilled("ab");
  f.spilled("cd");
  auto [both, at2] = f.memory_at(2);
  ASSERT_TRUE(both);
  EXPECT_EQ(*both, "abcd");  // one chunk
  EXPECT_EQ(at2, 2u);
  f.spilled("ef");  // `both` is held: a chunk of its own
  f.window(4);      // "abcd" goes: 6 bytes held past a window of 4
  f.advance(6, 1);
  EXPECT_FALSE(f.memory_at(1).first);
  EXPECT_EQ(*both, "abcd");  // what a reader holds stays whole
  auto [ef, at4] = f.memory_at(4);
  ASSERT_TRUE(ef);
  EXPECT_EQ(ef->substr(at4), "ef");
  ef.reset();
  both.reset();
  f.spilled("ghij");  // the newest chunk stays, even past the window
  f.advance(10, 2);
  auto [last, off] = f.memory_at(7);
  ASSERT_TRUE(last);
  EXPECT_EQ(last->substr(off), "hij");
  EXPECT_EQ(next_fill_step(f.view(), 6, std::nullopt).kind, Kind::SendMemory);
}

// Readers on other threads, each pumping when woken (as through an Inbox):
// every reader sees the end and the last byte, whatever the interleaving.
TEST(FillProgress, ReadersOnOtherThreadsSeeEveryByte) {
  constexpr uint64_t kTotal = 20000;
  FillProgress f(kTotal, 0);
  constexpr int kReaders = 4;
  std::vector<std::thread> readers;
  std::atomic<int> ended{0};
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&] {
      // Shared with the wake, which the writer may still be calling after
      // this reader is gone.
      auto news = std::make_shared<std::atomic<bool>>(true);
      const auto id = f.subscribe([news] { news->store(true); });
      uint64_t next = 0;
      for (;;) {
        if (!news->exchange(false)) {
          std::this_thread::yield();
          continue;
        }
        const auto step = next_fill_step(f.take(id), next, std::nullopt);
        if (step.kind == Kind::Send) {
          next += step.length;
          news->store(true);  // pump again at once, as the streamer does
        } else if (step.kind == Kind::End) {
          break;
        } else {
          ASSERT_NE(step.kind, Kind::Cut);
        }
      }
      EXPECT_EQ(next, kTotal);
      f.unsubscribe(id);
      ++ended;
    });
  }
  for (uint64_t n = 1; n <= kTotal; ++n) f.advance(n, static_cast<int64_t>(n));
  f.finish();
  for (auto& t : readers) t.join();
  EXPECT_EQ(ended.load(), kReaders);
}

}  // namespace
}  // namespace cdn::replica
