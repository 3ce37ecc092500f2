// SPDX-License-Identifier: MIT
// Keeps a file descriptor open while a range of it is queued to be sent
// (http::FileRange::owner); closes it when the last holder lets go.
#pragma once

#include <unistd.h>

namespace cdn::net {

struct OpenFile {
  explicit OpenFile(int f) : fd(f) {}
  ~OpenFile() { ::close(fd); }
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;
  int fd;
};

}  // namespace cdn::net
