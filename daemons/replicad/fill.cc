// SPDX-License-Identifier: MIT
#include "daemons/replicad/fill.hpp"

#include <algorithm>
#include <utility>
#include <vector>

namespace cdn::replica {

FillProgress::FillProgress(std::optional<uint64_t> length, int64_t now_ms) {
  v_.length = length;
  v_.last_progress_ms = now_ms;
}

std::vector<FillProgress::Wake> FillProgress::news_locked(bool end) {
  std::vector<Wake> out;
  for (auto& [id, s] : subs_) {
    if (s.armed && s.wake) {
      s.armed = false;
      out.push_back(end ? std::move(s.wake) : s.wake);
    }
    if (end) s.wake = nullptr;
  }
  return out;
}

void FillProgress::wake_all(std::vector<Wake> wakes) {
  for (auto& w : wakes) w();
}

void FillProgress::advance(uint64_t available, int64_t now_ms) {
  std::vector<Wake> wakes;
  {
    std::lock_guard lock(mu_);
    if (v_.state != State::Filling || available <= v_.available) return;
    v_.available = available;
    v_.last_progress_ms = now_ms;
    wakes = news_locked(false);
  }
  wake_all(std::move(wakes));
}

void FillProgress::finish() { end(State::Done); }

void FillProgress::fail() { end(State::Failed); }

void FillProgress::end(State state) {
  std::vector<Wake> wakes;
  {
    std::lock_guard lock(mu_);
    if (v_.state != State::Filling) return;
    v_.state = state;
    wakes = news_locked(true);
  }
  wake_all(std::move(wakes));
}

uint64_t FillProgress::subscribe(Wake wake) {
  std::lock_guard lock(mu_);
  const uint64_t id = ++next_id_;
  // A fill that ended keeps no wake: the subscriber takes the state itself.
  subs_.emplace(id, Sub{v_.state == State::Filling ? std::move(wake) : nullptr, true});
  return id;
}

FillProgress::View FillProgress::take(uint64_t id) {
  std::lock_guard lock(mu_);
  if (auto it = subs_.find(id); it != subs_.end()) it->second.armed = true;
  return v_;
}

void FillProgress::unsubscribe(uint64_t id) {
  Wake dropped;  // destroyed outside the lock: it may own its subscriber
  std::lock_guard lock(mu_);
  if (auto it = subs_.find(id); it != subs_.end()) {
    dropped = std::move(it->second.wake);
    subs_.erase(it);
  }
}

FillProgress::View FillProgress::view() const {
  std::lock_guard lock(mu_);
  return v_;
}

size_t FillProgress::subscribers() const {
  std::lock_guard lock(mu_);
  return subs_.size();
}

FillStep next_fill_step(const FillProgress::View& v, uint64_t next, std::optional<uint64_t> end) {
  using Kind = FillStep::Kind;
  if (v.state == FillProgress::State::Failed) return {Kind::Cut};
  const bool done = v.state == FillProgress::State::Done;
  uint64_t limit = v.available;
  if (!done && v.length && *v.length > 0) limit = std::min(limit, *v.length - 1);
  if (end) limit = std::min(limit, *end);
  if (limit > next) return {Kind::Send, next, limit - next};
  const bool all = end ? next >= *end : done && next >= v.available;
  if (all) return {Kind::End};
  // Done, yet short of what was promised: never end it as if whole.
  return {done ? Kind::Cut : Kind::Wait};
}

}  // namespace cdn::replica
