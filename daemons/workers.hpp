// SPDX-License-Identifier: MIT
// The daemons' workers ([server] workers, --workers): N event loops, each
// with its own listener and net::Server, so that connections spread over the
// cores (after h2o's num-threads and nginx's worker processes).
//
// Glossary and ownership:
// - worker 0 is the main loop: it keeps the signals, sd_notify, the
//   watchdog and what exists once (the balancer's prober); workers 1..N-1
//   are WorkerThreads, each a std::thread running a loop of its own.
// - Inbox: how one loop hands work to another (uv_async + a queue). Shared
//   (shared_ptr) by every poster; closed on its loop's thread, after which a
//   post is dropped rather than touching a closed handle.
// - Board<T>: an immutable value one thread publishes and others read (the
//   balancer's table snapshot, after Envoy's thread-local slots). A reader
//   keeps its own shared_ptr and asks the board only when the generation
//   moved: the common path is one atomic load, no lock.
// - Reply, answer_later: a request a worker takes but the main loop answers
//   (state that exists once, e.g. the balancer's purger): the worker defers
//   it, the main loop makes the Reply, and the worker's loop sends it.
// - Heartbeat: each worker loop stamps the time every kBeatEvery; the main
//   loop pings the systemd watchdog only while every stamp is recent, so a
//   stalled worker gets the daemon restarted as a stalled main loop does.
#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/net/server.hpp"
#include "common/uv/handle.hpp"

namespace cdn::daemon {

template <typename T>
class Board {
 public:
  // Any thread; readers see it on their next refresh().
  void publish(std::shared_ptr<const T> value) {
    std::lock_guard lock(mu_);
    value_ = std::move(value);
    generation_.fetch_add(1, std::memory_order_release);
  }
  // Points `held` at the newest value when one was published since `seen`
  // (the generation the caller last took); true when it changed.
  bool refresh(std::shared_ptr<const T>& held, uint64_t& seen) const {
    if (generation_.load(std::memory_order_acquire) == seen) return false;
    std::lock_guard lock(mu_);
    held = value_;
    seen = generation_.load(std::memory_order_relaxed);
    return true;
  }
  std::shared_ptr<const T> get() const {
    std::lock_guard lock(mu_);
    return value_;
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const T> value_;
  std::atomic<uint64_t> generation_{0};
};

class Inbox {
 public:
  // On the loop's thread.
  static std::shared_ptr<Inbox> make(uv_loop_t* loop);
  // Any thread: `fn` runs on the inbox's loop, in the order posted. False
  // (and `fn` dropped) once the inbox is closed.
  bool post(std::function<void()> fn);
  // On the loop's thread: no more runs; the loop may end.
  void close();

 private:
  void run_posted();
  std::mutex mu_;
  std::vector<std::function<void()>> queue_;
  uv::Ptr<uv_async_t> async_;  // null once closed (mu_ held to change)
};

// An answer made on one loop for a request taken on another.
struct Reply {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // besides Content-Length
  std::string body;
};
using Answer = std::function<void(Reply)>;
// Defers `ex` (on its loop) and returns what answers it from any thread,
// once: the Reply is posted to `home`, the inbox of the exchange's loop,
// and sent there unless the client went away meanwhile (or home closed).
Answer answer_later(net::Exchange& ex, std::shared_ptr<Inbox> home);

// How often a worker loop stamps its heartbeat.
inline constexpr std::chrono::milliseconds kBeatEvery{100};

class WorkerThreads {
 public:
  // Starts `count` threads, each running an idle loop (kept alive by its
  // inbox and heartbeat) until stop().
  explicit WorkerThreads(size_t count);
  ~WorkerThreads();  // stop()
  WorkerThreads(const WorkerThreads&) = delete;
  WorkerThreads& operator=(const WorkerThreads&) = delete;

  size_t size() const { return workers_.size(); }
  uv_loop_t* loop(size_t i) { return &workers_[i]->loop; }
  // Runs `fn` on thread i's loop (from any thread).
  void post(size_t i, std::function<void()> fn);
  // Runs `fn` on thread i's loop and waits for it: for start-up and
  // reload steps that build or change the worker's objects, whose
  // exceptions are passed on to the caller.
  void call(size_t i, const std::function<void()>& fn);
  // Debug hook: thread i's loop sleeps for an hour (the watchdog test).
  void stall(size_t i);
  // True when every loop stamped its heartbeat after `since`.
  bool all_beat_since(std::chrono::steady_clock::time_point since) const;
  // Closes each loop's inbox and heartbeat; a loop ends once the handles
  // its objects own are closed too (stop them first), then `at_exit(i)`
  // runs on that thread (destroy the worker's objects there), and the
  // threads are joined. Twice is harmless.
  void stop(const std::function<void(size_t)>& at_exit = {});

 private:
  struct Worker {
    uv_loop_t loop{};
    std::shared_ptr<Inbox> inbox;
    uv::Ptr<uv_timer_t> beat_timer;
    std::atomic<int64_t> beat_ns{0};  // steady_clock of the last stamp
    std::function<void()> at_exit;
    std::thread thread;
  };
  std::vector<std::unique_ptr<Worker>> workers_;
  bool stopped_ = false;
};

// Runs `fn` on worker i's loop: at once for worker 0 (the caller's, the
// main loop), posted to its thread otherwise.
void on_worker(WorkerThreads* threads, size_t i, std::function<void()> fn);

// A graceful stop of `count` workers: drain(i, finished) runs on worker i's
// loop and calls `finished` (from that loop) once worker i is drained;
// `done` runs on the main loop (through `main`) once every worker is.
void drain_workers(WorkerThreads* threads, size_t count, const std::shared_ptr<Inbox>& main,
                   const std::function<void(size_t, std::function<void()>)>& drain,
                   std::function<void()> done);

}  // namespace cdn::daemon
