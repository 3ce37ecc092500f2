// SPDX-License-Identifier: MIT
#include "daemons/replicad/fill.hpp"

#include <algorithm>
#include <iterator>
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

void FillProgress::wake_all(const std::vector<Wake>& wakes) {
  for (const auto& w : wakes) w();
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
  wake_all(wakes);
}

void FillProgress::spill(uint64_t file_end) {
  std::lock_guard lock(mu_);
  if (v_.file_end == UINT64_MAX) v_.file_end = memory_end_ = file_end;
}

void FillProgress::spilled(std::string_view bytes) {
  if (bytes.empty()) return;
  std::lock_guard lock(mu_);
  if (v_.file_end == UINT64_MAX || v_.state != State::Filling) return;
  // The newest chunk grows only until a reader is handed it: from then on a
  // reader on another thread may be copying from it outside mu_. (Its
  // use_count() could say whether one still holds it, but that read orders
  // nothing: the reader's copy could still race the append's reallocation.)
  constexpr size_t kChunk = 256 * 1024;
  if (!memory_.empty() && !newest_handed_ &&
      memory_.back().second->size() + bytes.size() <= kChunk) {
    memory_.back().second->append(bytes);
  } else {
    memory_.emplace_back(memory_end_, std::make_shared<std::string>(bytes));
    newest_handed_ = false;
  }
  memory_end_ += bytes.size();
  memory_held_ += bytes.size();
  trim_locked();
}

void FillProgress::window(uint64_t bytes) {
  std::lock_guard lock(mu_);
  window_ = bytes;
  trim_locked();
}

void FillProgress::trim_locked() {
  // The newest chunk always stays: it is what the clients are waiting for.
  while (memory_held_ > window_ && memory_.size() > 1) {
    memory_held_ -= memory_.front().second->size();
    memory_.pop_front();
  }
}

std::pair<std::shared_ptr<const std::string>, size_t> FillProgress::memory_at(
    uint64_t offset) const {
  std::lock_guard lock(mu_);
  // The chunk whose start is the last one at or before offset.
  auto it = std::upper_bound(memory_.begin(), memory_.end(), offset,
                             [](uint64_t o, const auto& c) { return o < c.first; });
  if (it == memory_.begin()) return {};
  --it;
  if (offset >= it->first + it->second->size()) return {};
  if (std::next(it) == memory_.end()) newest_handed_ = true;
  return {it->second, static_cast<size_t>(offset - it->first)};
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
  wake_all(wakes);
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

FillStep next_fill_step(const FillProgress::View& v, uint64_t next, std::optional<uint64_t> end,
                        uint64_t first) {
  using Kind = FillStep::Kind;
  if (v.state == FillProgress::State::Failed) return {Kind::Cut};
  const bool done = v.state == FillProgress::State::Done;
  uint64_t limit = std::max(v.available, first);
  if (!done && v.length && *v.length > 0) limit = std::min(limit, *v.length - 1);
  if (end) limit = std::min(limit, *end);
  if (limit > next) {
    if (next < first) return {Kind::SendFirst, next, std::min(limit, first) - next};
    if (next >= v.file_end) return {Kind::SendMemory, next, limit - next};
    return {Kind::Send, next, std::min(limit, v.file_end) - next};
  }
  const bool all = end ? next >= *end : done && next >= v.available;
  if (all) return {Kind::End};
  // Done, yet short of what was promised: never end it as if whole.
  return {done ? Kind::Cut : Kind::Wait};
}

}  // namespace cdn::replica
