// SPDX-License-Identifier: MIT
#include "daemons/workers.hpp"

#include <spdlog/spdlog.h>

#include <exception>
#include <future>

namespace cdn::daemon {

namespace {
int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

std::shared_ptr<Inbox> Inbox::make(uv_loop_t* loop) {
  auto inbox = std::make_shared<Inbox>();
  // The handle holds the inbox weakly: posts keep it alive, not the loop.
  std::weak_ptr<Inbox> weak = inbox;
  inbox->async_ = uv::make_async(loop, [weak] {
    if (auto self = weak.lock()) self->run_posted();
  });
  if (!inbox->async_) throw std::runtime_error("cannot make an async handle");
  return inbox;
}

bool Inbox::post(std::function<void()> fn) {
  std::lock_guard lock(mu_);
  if (!async_) return false;
  queue_.push_back(std::move(fn));
  uv_async_send(&async_->raw);
  return true;
}

void Inbox::run_posted() {
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(queue_);
  }
  for (auto& fn : batch) uv::guarded("posted work", fn);
}

void Inbox::close() {
  uv::Ptr<uv_async_t> closing;
  {
    std::lock_guard lock(mu_);
    closing = std::move(async_);
    queue_.clear();
  }
}

WorkerThreads::WorkerThreads(size_t count) {
  for (size_t i = 0; i < count; ++i) {
    auto w = std::make_unique<Worker>();
    uv_loop_init(&w->loop);
    w->inbox = Inbox::make(&w->loop);
    Worker* raw = w.get();
    w->beat_ns = steady_ns();
    w->beat_timer = uv::make_timer(&w->loop, [raw] { raw->beat_ns = steady_ns(); });
    const auto every = static_cast<uint64_t>(kBeatEvery.count());
    uv::timer_start(w->beat_timer.get(), every, every);
    w->thread = std::thread([raw] {
      uv_run(&raw->loop, UV_RUN_DEFAULT);
      if (raw->at_exit) uv::guarded("worker exit", raw->at_exit);
      uv::close_loop(&raw->loop);
    });
    workers_.push_back(std::move(w));
  }
}

WorkerThreads::~WorkerThreads() { stop(); }

void WorkerThreads::post(size_t i, std::function<void()> fn) {
  workers_[i]->inbox->post(std::move(fn));
}

void WorkerThreads::call(size_t i, const std::function<void()>& fn) {
  std::promise<void> done;
  auto result = done.get_future();
  const bool posted = workers_[i]->inbox->post([&] {
    try {
      fn();
      done.set_value();
    } catch (...) {
      done.set_exception(std::current_exception());
    }
  });
  if (!posted) throw std::runtime_error("worker stopped");
  result.get();
}

void WorkerThreads::stall(size_t i) {
  post(i, [] { std::this_thread::sleep_for(std::chrono::hours(1)); });
}

bool WorkerThreads::all_beat_since(std::chrono::steady_clock::time_point since) const {
  const int64_t t =
      std::chrono::duration_cast<std::chrono::nanoseconds>(since.time_since_epoch()).count();
  for (const auto& w : workers_) {
    if (w->beat_ns.load(std::memory_order_relaxed) < t) return false;
  }
  return true;
}

void WorkerThreads::stop(const std::function<void(size_t)>& at_exit) {
  if (stopped_) return;
  stopped_ = true;
  for (size_t i = 0; i < workers_.size(); ++i) {
    Worker* w = workers_[i].get();
    if (at_exit) w->at_exit = [at_exit, i] { at_exit(i); };
    // Set before the post: the thread reads at_exit only after running it.
    w->inbox->post([w] {
      w->beat_timer.reset();
      w->inbox->close();
    });
  }
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
}

Answer answer_later(net::Exchange& ex, std::shared_ptr<Inbox> home) {
  return [deferred = ex.defer(), home = std::move(home)](Reply r) {
    home->post([deferred, r = std::move(r)] {
      auto* ex = deferred.exchange();
      if (ex == nullptr) return;
      auto& h = ex->begin(r.status);
      for (const auto& [name, value] : r.headers) h.header(name, value);
      h.header("Content-Length", static_cast<uint64_t>(r.body.size()));
      ex->finish(r.body);
    });
  };
}

void on_worker(WorkerThreads* threads, size_t i, std::function<void()> fn) {
  if (i == 0) {
    fn();
  } else {
    threads->post(i - 1, std::move(fn));
  }
}

void drain_workers(WorkerThreads* threads, size_t count, const std::shared_ptr<Inbox>& main,
                   const std::function<void(size_t, std::function<void()>)>& drain,
                   std::function<void()> done) {
  // Counted on the main loop only: each worker's "drained" is posted there.
  auto left = std::make_shared<size_t>(count);
  auto one_done = [left, done = std::move(done)] {
    if (--*left == 0) done();
  };
  for (size_t i = 0; i < count; ++i) {
    on_worker(threads, i,
              [i, drain, main, one_done] { drain(i, [main, one_done] { main->post(one_done); }); });
  }
}

}  // namespace cdn::daemon
