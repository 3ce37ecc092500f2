// SPDX-License-Identifier: MIT
#include "daemons/lifecycle.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>

namespace cdn::daemon {
namespace {

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
