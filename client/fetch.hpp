// SPDX-License-Identifier: MIT
// cdn-get's download logic: ask the balancer, download from the replica it
// names, fall back to the next one on any failure (resuming with Range where
// the replica allows), verify length and digest, and publish the file
// atomically (temp file + rename). Runs its own libuv loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "client/url.hpp"
#include "common/tls/context.hpp"

namespace cdn::get {

// Distinct exit codes, one per kind of failure (documented in README.md).
enum ExitCode : int {
  kOk = 0,
  kUsage = 2,
  kNoReplica = 3,       // balancer unreachable, or no replica up for longer than --wait
  kTransferFailed = 4,  // every replica failed
  kVerifyFailed = 5,    // content did not match its length or digest on every replica
  kWriteFailed = 6,     // the output file could not be written
  kNotFound = 7,        // a definite 404 or 410: no replica will have it
  kInterrupted = 130,   // SIGINT or SIGTERM; no temporary file is left
};

struct Options {
  Url start;                                  // the balancer (or a replica) to ask first
  std::string output;                         // file to write ("-" for standard output)
  std::chrono::milliseconds wait{30'000};     // how long to wait for a replica to be up
  std::chrono::milliseconds timeout{10'000};  // no progress for this long fails an attempt
  // --continue: bytes already in `output` are kept and the rest asked for
  // with a Range request; the digest is checked over the whole file.
  bool resume = false;
  int max_rounds = 3;  // times the balancer is asked after every replica failed
  // What https:// URLs are checked against (--cacert, --insecure).
  std::shared_ptr<const tls::ClientContext> tls;
  // Told each time the balancer is to be asked again (no replica up yet, or
  // the balancer unreachable): what happened and the wait before the next try.
  std::function<void(const std::string& why, std::chrono::milliseconds delay)> on_wait;
  // Told when a body begins (bytes already held, total or UINT64_MAX, the
  // replica) and after every piece of it (bytes so far): the progress line.
  std::function<void(uint64_t bytes, uint64_t total, const std::string& replica)> on_body_start;
  std::function<void(uint64_t bytes)> on_body_progress;
};

struct Result {
  int exit_code = kOk;
  std::string message;  // one line: what happened
  std::string replica;  // who served the file
  uint64_t bytes = 0;
  std::vector<std::string> failures;  // one line per failed attempt
};

Result fetch(const Options& options);

}  // namespace cdn::get
