// SPDX-License-Identifier: MIT
// GET /.cdn/status?watch=MS[&count=N], the status stream of both daemons:
// one document at once, then one every MS milliseconds, N in all, each a
// line of NDJSON in a chunked answer; and one at once when the daemon
// starts draining (which ends every stream). A balancer watching a replica
// pays one read per interval instead of a request and its answer (after
// gRPC's health Watch and ORCA's out-of-band load reports); a browser's
// dashboard reads the same lines with fetch().
//
// StatusWatches owns every open watch and its timer; it lives on the loop
// thread, as long as the server whose exchanges it holds.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/net/server.hpp"
#include "common/uv/handle.hpp"

namespace cdn::daemon {

class StatusWatches {
 public:
  // `document` makes the next document (one line, no newline); called on the
  // loop, once per watch and interval.
  StatusWatches(uv_loop_t* loop, std::function<std::string()> document)
      : loop_(loop), document_(std::move(document)) {}

  // True when the request asks for a stream (a GET over HTTP/1.1 or later
  // with watch=MS; HEAD and HTTP/1.0, which has no chunked bodies, get the
  // one document) and has been answered: a stream started, or 400 for a bad
  // MS or N, 503 past the daemon-wide number of watches.
  bool serve(net::Exchange& ex);
  // Every stream gets one last document and ends; later watches get one
  // document and end at once (draining).
  void end_all();
  // Drops every stream without a word (stop).
  void clear() { watches_.clear(); }
  size_t size() const { return watches_.size(); }

 private:
  struct Watch {
    net::Deferred answer;
    uv::Ptr<uv_timer_t> timer;
    uint32_t left = 0;     // documents still to send
    uint64_t every = 0;    // ms between documents
    uint64_t next_at = 0;  // loop time (uv_now) of the next one
  };
  void arm(Watch& w);
  // Sends the watch its next document; false once the watch is over.
  bool push(Watch& w);

  uv_loop_t* loop_;
  std::function<std::string()> document_;
  bool ending_ = false;
  std::vector<std::unique_ptr<Watch>> watches_;
};

}  // namespace cdn::daemon
