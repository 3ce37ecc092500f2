// SPDX-License-Identifier: MIT
#include "common/purge/ledger.hpp"

#include <algorithm>
#include <charconv>
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

namespace {

constexpr std::string_view kMagic = "cdn-purge-ledger 1";

void put(std::string& out, std::string_view field) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  out.push_back(' ');
  if (field.empty() || field == "-") {
    out.append(field.empty() ? "-" : "%2D");
    return;
  }
  for (const char ch : field) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f || c == '%') {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    } else {
      out.push_back(ch);
    }
  }
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> take(std::string_view field) {
  if (field == "-") return std::string();
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] != '%') {
      out.push_back(field[i]);
      continue;
    }
    if (i + 2 >= field.size()) return std::nullopt;
    const int hi = hex_digit(field[i + 1]), lo = hex_digit(field[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

template <typename T>
std::optional<T> number(std::string_view s) {
  T v{};
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::vector<std::string_view> words(std::string_view line) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos <= line.size()) {
    const size_t end = std::min(line.size(), line.find(' ', pos));
    out.push_back(line.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

}  // namespace

std::string Ledger::save() const {
  std::string out(kMagic);
  out.append("\nnext ").append(std::to_string(next_id_)).push_back('\n');
  for (const auto& [id, held] : entries_) {
    const Entry& e = held.first;
    out.append("purge ").append(std::to_string(id)).push_back(' ');
    out.append(std::to_string(e.at_ms));
    put(out, to_string(e.request.scope));
    put(out, e.request.soft ? "1" : "0");
    put(out, e.request.site);
    put(out, e.request.target);
    for (const auto& t : e.request.tags) put(out, t);
    out.push_back('\n');
  }
  // In name order: the same ledger is the same text.
  std::vector<const std::string*> names;
  for (const auto& kv : owed_) names.push_back(&kv.first);
  std::sort(names.begin(), names.end(), [](auto* a, auto* b) { return *a < *b; });
  for (const std::string* name : names) {
    out.append("owes");
    put(out, *name);
    for (uint64_t id : owed_.at(*name)) out.append(" ").append(std::to_string(id));
    out.push_back('\n');
  }
  out.append("end\n");
  return out;
}

std::optional<Ledger> Ledger::load(std::string_view text, std::string& error) {
  Ledger l;
  size_t line_no = 0;
  bool seen_next = false;
  const auto fail = [&](const std::string& why) {
    error = "line " + std::to_string(line_no) + ": " + why;
    return std::nullopt;
  };
  uint64_t max_id = 0;
  bool ended = false;
  while (!text.empty()) {
    if (ended) return fail("records after the end");
    ++line_no;
    const size_t nl = text.find('\n');
    if (nl == std::string_view::npos) return fail("cut short (no newline)");
    const std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl + 1);
    if (line_no == 1) {
      if (line != kMagic) return fail("not a purge ledger (or another version)");
      continue;
    }
    const auto w = words(line);
    if (line == "end") {
      ended = true;
    } else if (w[0] == "next" && w.size() == 2) {
      const auto n = number<uint64_t>(w[1]);
      if (!n || *n == 0) return fail("bad next id");
      l.next_id_ = *n;
      seen_next = true;
    } else if (w[0] == "purge" && w.size() >= 7) {
      const auto id = number<uint64_t>(w[1]);
      const auto at = number<int64_t>(w[2]);
      const auto scope = take(w[3]);
      const auto soft = take(w[4]);
      auto site = take(w[5]);
      auto target = take(w[6]);
      if (!id || *id == 0 || !at || !scope || !soft || !site || !target) {
        return fail("bad purge record");
      }
      Request r;
      if (*scope == "url") {
        r.scope = Scope::Url;
      } else if (*scope == "prefix") {
        r.scope = Scope::Prefix;
      } else if (*scope == "tag") {
        r.scope = Scope::Tag;
      } else {
        return fail("unknown scope");
      }
      if (*soft != "0" && *soft != "1") return fail("bad soft flag");
      r.soft = *soft == "1";
      r.site = std::move(*site);
      r.target = std::move(*target);
      if (w.size() - 7 > kMaxTags) return fail("too many tags");
      for (size_t i = 7; i < w.size(); ++i) {
        auto tag = take(w[i]);
        if (!tag || tag->empty()) return fail("bad tag");
        r.tags.push_back(std::move(*tag));
      }
      r.id = std::to_string(*id);
      if (l.entries_.count(*id)) return fail("purge listed twice");
      l.entries_[*id] = {Entry{*id, std::move(r), *at}, 0};
      max_id = std::max(max_id, *id);
    } else if (w[0] == "owes" && w.size() >= 3) {
      auto name = take(w[1]);
      if (!name || name->empty() || l.owed_.count(*name)) return fail("bad replica");
      if (w.size() - 2 > kMaxOwed) return fail("more purges owed than a ledger holds");
      auto& q = l.owed_[*name];
      for (size_t i = 2; i < w.size(); ++i) {
        const auto id = number<uint64_t>(w[i]);
        if (!id) return fail("bad purge id");
        auto e = l.entries_.find(*id);
        if (e == l.entries_.end()) return fail("owes a purge not listed");
        if (std::find(q.begin(), q.end(), *id) != q.end()) return fail("owes a purge twice");
        q.push_back(*id);
        ++e->second.second;
      }
    } else {
      return fail("unknown record");
    }
  }
  if (!ended) return fail("cut short (no end)");
  if (!seen_next || l.next_id_ <= max_id) return fail("no next id above every purge's");
  // Purges no replica owes any more are not kept.
  std::erase_if(l.entries_, [](const auto& kv) { return kv.second.second == 0; });
  return l;
}

}  // namespace cdn::purge
