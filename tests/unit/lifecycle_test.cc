// SPDX-License-Identifier: MIT
#include "daemons/lifecycle.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <vector>

#include "daemons/heap.hpp"

namespace cdn::daemon {
namespace {

TEST(HeapTrim, TrimsWhenFreeMemoryGrewBySlackOverTheLeastSeen) {
  HeapTrim t(100);
  EXPECT_FALSE(t.due(0));
  EXPECT_FALSE(t.due(99));
  EXPECT_TRUE(t.due(100));
  t.trimmed(100);
  // Trimmed memory stays counted as free: no second trim for it.
  EXPECT_FALSE(t.due(100));
  EXPECT_FALSE(t.due(199));
  EXPECT_TRUE(t.due(250));
  t.trimmed(250);
}

TEST(HeapTrim, MemoryTakenAgainAndFreedAgainIsTrimmedAgain) {
  HeapTrim t(100);
  t.trimmed(1000);
  EXPECT_FALSE(t.due(1050));
  // Connections took most of it again (their pages came back)...
  EXPECT_FALSE(t.due(200));
  // ...and closed: it is free, and resident, again.
  EXPECT_TRUE(t.due(1000));
}

long resident_pages() {
  long size = 0, resident = 0;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &size, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident;
}

TEST(HeapTrim, GivesClosedConnectionsMemoryBack) {
  // The adapter on this process's own heap (glibc's; a sanitizer's
  // allocator reports nothing free, and there is nothing to see).
  std::vector<std::unique_ptr<char[]>> blocks;
  for (int i = 0; i < 2000; ++i) blocks.emplace_back(new char[8192]());
  const size_t before = heap_free_bytes();
  blocks.erase(blocks.begin(), blocks.end() - 1);  // the last one holds the top
  const size_t freed = heap_free_bytes();
  if (freed == 0) GTEST_SKIP() << "the allocator reports no free bytes (a sanitizer's)";
  EXPECT_GE(freed, before + 8 * 1000 * 1000);
  HeapTrim t(1 << 20);
  EXPECT_FALSE(t.due(before));
  EXPECT_TRUE(t.due(freed));
  const long resident = resident_pages();
  trim_heap();  // gives pages back; malloc still counts them free
  // 1,999 blocks of 8 KiB were freed: most of their pages leave the RSS.
  EXPECT_LE(resident_pages(), resident - 8 * 1000 * 1000 / sysconf(_SC_PAGESIZE));
  t.trimmed(heap_free_bytes());
  EXPECT_FALSE(t.due(heap_free_bytes()));
}

TEST(PlanNofile, RaisesTheSoftLimitToTheHardOne) {
  const auto p = plan_nofile(1024, 524288, 1048576, 10064);
  EXPECT_EQ(p.soft, 524288u);
  EXPECT_TRUE(p.fits);
}

TEST(PlanNofile, AnUnlimitedHardLimitMeansTheKernelsCeiling) {
  const auto p = plan_nofile(1024, RLIM_INFINITY, 1048576, 10064);
  EXPECT_EQ(p.soft, 1048576u);
  EXPECT_TRUE(p.fits);
  // Already unlimited (as root may set it): left alone.
  EXPECT_EQ(plan_nofile(RLIM_INFINITY, RLIM_INFINITY, 1048576, 10).soft, RLIM_INFINITY);
}

TEST(PlanNofile, SaysWhenMaxConnectionsCannotFit) {
  const auto p = plan_nofile(256, 1000, 1048576, 5065);
  EXPECT_EQ(p.soft, 1000u);
  EXPECT_FALSE(p.fits);
  EXPECT_TRUE(plan_nofile(256, 1000, 1048576, 1000).fits);
  EXPECT_FALSE(plan_nofile(256, 1000, 1048576, 1001).fits);
  // Soft already at the hard limit: nothing to raise.
  EXPECT_EQ(plan_nofile(4096, 4096, 1048576, 10).soft, 4096u);
}

}  // namespace
}  // namespace cdn::daemon
