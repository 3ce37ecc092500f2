// SPDX-License-Identifier: MIT
#include <gtest/gtest.h>

#include <chrono>

#include "client/progress.hpp"

namespace cdn::get {
namespace {

using namespace std::chrono_literals;
using T = Progress::Clock::time_point;

TEST(ProgressFormat, Bytes) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(1023), "1023 B");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(12 * 1024 * 1024 + 300 * 1024), "12.3 MiB");
  EXPECT_EQ(format_bytes(200ULL << 20), "200 MiB");
  EXPECT_EQ(format_bytes(3ULL << 40), "3.00 TiB");
}

TEST(ProgressFormat, Eta) {
  EXPECT_EQ(format_eta(7s), "0:07");
  EXPECT_EQ(format_eta(754s), "12:34");
  EXPECT_EQ(format_eta(3723s), "1:02:03");
  EXPECT_EQ(format_eta(-5s), "0:00");
}

TEST(Progress, LineWithRateEtaAndReplica) {
  Progress p;
  const T t0{};
  p.start(t0, 0, 10 << 20, "127.0.0.2:33000");
  auto first = p.update(t0, 0);
  ASSERT_TRUE(first);
  EXPECT_EQ(*first, "0 B / 10.0 MiB  0%  --/s  from 127.0.0.2:33000");
  // 1 MiB a second for two seconds: 2 MiB of 10, 8 s left.
  auto line = p.update(t0 + 2s, 2 << 20);
  ASSERT_TRUE(line);
  EXPECT_EQ(*line, "2.00 MiB / 10.0 MiB  20%  1.00 MiB/s  ETA 0:08  from 127.0.0.2:33000");
}

TEST(Progress, RedrawnAtMostEveryInterval) {
  Progress p;
  const T t0{};
  p.start(t0, 0, Progress::kUnknown, "");
  EXPECT_TRUE(p.update(t0, 10));
  EXPECT_FALSE(p.update(t0 + 100ms, 20));
  EXPECT_FALSE(p.update(t0 + 199ms, 30));
  auto line = p.update(t0 + 200ms, 40);
  ASSERT_TRUE(line);
  EXPECT_EQ(*line, "40 B  200 B/s");  // no total: no percentage, no ETA
}

TEST(Progress, RateFollowsTheLastWindow) {
  Progress p;
  const T t0{};
  p.start(t0, 0, Progress::kUnknown, "r");
  uint64_t bytes = 0;
  // 10 s at 1 MiB/s, then 10 s at 100 KiB/s: the rate shown is the new one.
  for (int i = 1; i <= 10; ++i) p.update(t0 + i * 1s, bytes += 1 << 20);
  for (int i = 11; i <= 20; ++i) p.update(t0 + i * 1s, bytes += 100 << 10);
  EXPECT_EQ(p.line(t0 + 20s), "11.0 MiB  100 KiB/s  from r");
}

TEST(Progress, ResumedDownloadCountsOnlyNewBytesInTheRate) {
  Progress p;
  const T t0{};
  p.start(t0, 6 << 20, 8 << 20, "r");
  auto line = p.update(t0 + 1s, (6 << 20) + (512 << 10));
  ASSERT_TRUE(line);
  EXPECT_EQ(*line, "6.50 MiB / 8.00 MiB  81%  512 KiB/s  ETA 0:03  from r");
}

}  // namespace
}  // namespace cdn::get
