// SPDX-License-Identifier: MIT
// The access log's writer thread (common/access/writer): lines reach the
// file, and a reopen (SIGHUP after logrotate) splits them where it was asked.
#include "common/access/writer.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace cdn::access {
namespace {

std::string read(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// logrotate renames the file, then the daemon reopens it: a line logged
// after the reopen was asked for goes to the new file, never the rotated
// one, however late the writer's thread wakes (it used to take both in one
// batch, written to the old file).
TEST(AccessWriter, LinesAfterAReopenGoToTheNewFile) {
  char tmpl[] = "/tmp/cdn-access-writer-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::filesystem::path dir = tmpl;
  for (int round = 0; round < 20; ++round) {
    const auto log = dir / "access.log", rotated = dir / "access.log.1";
    {
      WriterOptions o;
      o.target = log.string();
      Writer w(o);
      w.write("before\n");
      std::filesystem::rename(log, rotated);
      w.reopen();
      w.write("after\n");
    }  // the destructor writes what is held
    EXPECT_EQ(read(rotated), "before\n") << round;
    EXPECT_EQ(read(log), "after\n") << round;
    std::filesystem::remove(log);
    std::filesystem::remove(rotated);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace cdn::access
