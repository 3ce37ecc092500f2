// SPDX-License-Identifier: MIT
// Fetches from the origin with libcurl's multi-socket API driven by the
// replica's libuv loop (curl's multi-uv pattern): curl tells us which
// sockets to watch (CURLMOPT_SOCKETFUNCTION -> uv_poll_t) and when to call
// it back (CURLMOPT_TIMERFUNCTION -> uv_timer_t). Nothing blocks the loop.
//
// Ownership: Origin lives on the loop thread and owns every transfer and
// the uv handles it made (freed in their close callbacks). close() aborts
// the transfers (their `done` is not called) and closes the handles; it
// must run while the loop still runs (Replica::stop), before the Origin is
// destroyed.
#pragma once

#include <curl/curl.h>
#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/uv/handle.hpp"

namespace cdn::replica {

struct OriginOptions {
  std::chrono::milliseconds timeout{10'000};  // connect, and no progress for this long
  uint64_t min_rate = 1024;  // bytes/s averaged over `timeout`, or the fetch gives up
  std::string ca_file;       // empty: the system's CA store
  std::string user_agent = "cdn-replicad";
};

// One request to the origin. The body is sent with its length (never chunked).
struct OriginRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::string> headers;  // extra lines, "Name: value"
  std::string body;
};

struct OriginHead {
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // as received, names as sent
  std::optional<std::string_view> header(std::string_view name) const;  // case-insensitive
};

enum class OriginError {
  None,
  Unreachable,
  Timeout,
  Refused,   // a callback said stop
  Malformed  // a response head whose framing or fields cannot be trusted (RFC 9112)
};

struct OriginResult {
  OriginError error = OriginError::None;
  std::string message;  // curl's explanation when error != None
};

struct OriginCallbacks {
  // The response head arrived (status and headers). Return false to abort.
  std::function<bool(const OriginHead&)> head;
  // An interim (1xx, not 100/101) response head, before the final one.
  std::function<void(const OriginHead&)> interim;
  // Some body bytes. Return false to abort.
  std::function<bool(const char*, size_t)> body;
  // The transfer ended (after head/body, or without them on an error).
  std::function<void(const OriginResult&)> done;
};

class Origin {
 public:
  Origin(uv_loop_t* loop, OriginOptions options);
  ~Origin();
  Origin(const Origin&) = delete;
  Origin& operator=(const Origin&) = delete;

  // Starts `request`. Callbacks run on the loop thread from curl's
  // progress; only when curl refuses the transfer outright does `done` run
  // inside fetch().
  // Returns the transfer's id for cancel(), 0 when `done` already ran.
  uint64_t fetch(OriginRequest request, OriginCallbacks callbacks);
  // Stops a transfer (its connection to the origin is closed, not reused);
  // `done` is not called. Not from inside that transfer's own callbacks.
  void cancel(uint64_t id);
  void set_options(OriginOptions options) { options_ = std::move(options); }
  void close();
  size_t active() const { return transfers_.size(); }

 private:
  struct Transfer;
  struct Socket;
  static int on_socket(CURL* easy, curl_socket_t s, int what, void* userp, void* socketp) noexcept;
  static int on_timer(CURLM* multi, long timeout_ms, void* userp) noexcept;
  static size_t on_header(char* data, size_t size, size_t n, void* userp) noexcept;
  static size_t refuse_malformed(Transfer* t, std::string_view why);
  static size_t on_body(char* data, size_t size, size_t n, void* userp) noexcept;
  void action(curl_socket_t s, int flags);
  void check_done();

  uv_loop_t* loop_;
  OriginOptions options_;
  CURLM* multi_ = nullptr;
  uv::Ptr<uv_timer_t> timer_;
  std::unordered_map<CURL*, Transfer*> transfers_;
  std::unordered_map<uint64_t, CURL*> ids_;
  uint64_t last_id_ = 0;
  bool closed_ = false;
};

}  // namespace cdn::replica
