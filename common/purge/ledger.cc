// SPDX-License-Identifier: MIT
#include "common/purge/ledger.hpp"

#include <algorithm>
#include <unordered_set>

namespace cdn::purge {

uint64_t Ledger::add(Request request, const std::vector<std::string>& replicas, int64_t now_ms) {
  const uint64_t id = next_id_++;
  request.id = std::to_string(id);
  auto& [entry, refs] = entries_[id];
  entry = Entry{id, std::move(request), now_ms};
  refs = 0;
  for (const auto& name : replicas) {
    auto& q = owed_[name];
    if (std::find(q.begin(), q.end(), id) != q.end()) continue;  // listed twice
    if (q.size() >= kMaxOwed) {
      // Everything, once, instead of the queue (see the header).
      for (uint64_t old : q) release(old);
      q.clear();
      const uint64_t all = next_id_++;
      Request r;
      r.scope = Scope::Prefix;
      r.target = "/";
      r.id = std::to_string(all);
      entries_[all] = {Entry{all, std::move(r), now_ms}, 1};
      q.push_back(all);
      continue;
    }
    q.push_back(id);
    ++refs;
  }
  if (refs == 0) entries_.erase(id);
  return id;
}

void Ledger::release(uint64_t id) {
  auto it = entries_.find(id);
  if (it != entries_.end() && --it->second.second == 0) entries_.erase(it);
}

void Ledger::ack(const std::string& replica, uint64_t id) {
  auto it = owed_.find(replica);
  if (it == owed_.end()) return;
  auto& q = it->second;
  auto pos = std::find(q.begin(), q.end(), id);
  if (pos == q.end()) return;
  q.erase(pos);
  release(id);
  if (q.empty()) owed_.erase(it);
}

std::vector<const Ledger::Entry*> Ledger::owed(const std::string& replica) const {
  std::vector<const Entry*> out;
  auto it = owed_.find(replica);
  if (it == owed_.end()) return out;
  for (uint64_t id : it->second) {
    if (auto e = entries_.find(id); e != entries_.end()) out.push_back(&e->second.first);
  }
  return out;
}

bool Ledger::owes(const std::string& replica) const { return owed_.count(replica) != 0; }

void Ledger::keep_only(const std::vector<std::string>& replicas) {
  const std::unordered_set<std::string> keep(replicas.begin(), replicas.end());
  for (auto it = owed_.begin(); it != owed_.end();) {
    if (keep.count(it->first)) {
      ++it;
      continue;
    }
    for (uint64_t id : it->second) release(id);
    it = owed_.erase(it);
  }
}

size_t Ledger::replicas_owing() const { return owed_.size(); }

size_t Ledger::owed_total() const {
  size_t n = 0;
  for (const auto& [name, q] : owed_) n += q.size();
  return n;
}

const Ledger::Entry* Ledger::find(uint64_t id) const {
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : &it->second.first;
}

}  // namespace cdn::purge
