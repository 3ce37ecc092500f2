// SPDX-License-Identifier: MIT
// Keeps a file descriptor open while a range of it is queued to be sent
// (http::FileRange::owner); closes it when the last holder lets go.
// `also`: what else must live as long as the descriptor (finish_file's
// owner: the edge cache counts an evicted body's blocks until then).
#pragma once

#include <unistd.h>

#include <memory>
#include <utility>

namespace cdn::net {

struct OpenFile {
  explicit OpenFile(int f, std::shared_ptr<const void> a = nullptr) : fd(f), also(std::move(a)) {}
  ~OpenFile() { ::close(fd); }
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;
  int fd;
  std::shared_ptr<const void> also;
};

}  // namespace cdn::net
