// SPDX-License-Identifier: MIT
#include "daemons/balancerd/table.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace cdn::balancer {
namespace {

// Consistent hashing must give the same ring in every balancer process and
// across restarts, so no std::hash: FNV-1a 64 over the bytes, then the
// splitmix64 finalizer, because FNV-1a alone spreads short keys that differ
// only in their last character ("a:1#1", "a:1#2") poorly over the high bits.
uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

uint64_t fnv1a(std::string_view s, uint64_t h = 0xcbf29ce484222325ULL) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

uint64_t hash_key(std::string_view s) { return mix64(fnv1a(s)); }

// The identity of a replica on the ring. Own spelling (not HostPort::str())
// so the ring never changes when display formatting does.
std::string ring_key(const config::HostPort& a) { return a.host + ":" + std::to_string(a.port); }

double capacity_of(const Replica& r) {
  return static_cast<double>(r.reported_capacity > 0 ? r.reported_capacity : kAssumedCapacity);
}

}  // namespace

std::string_view to_string(Health h) noexcept {
  switch (h) {
    case Health::Down:
      return "down";
    case Health::Up:
      return "up";
    case Health::Draining:
      return "draining";
    case Health::Held:
      return "held";
  }
  return "down";
}

double probe_load(const Replica& r) noexcept {
  return r.byte_load >= 0 ? (r.reported_load + r.byte_load) / 2 : r.reported_load;
}

double load_estimate(const Replica& r) noexcept {
  return probe_load(r) + r.sent_since_probe / capacity_of(r);
}

Table::Table(std::vector<config::ReplicaEntry> replicas, const config::ProbeSettings& probe,
             const config::BalanceSettings& balance, uint64_t seed)
    : probe_(probe), balance_(balance), policy_(balance.policy), rng_(seed) {
  replicas_.reserve(replicas.size());
  for (auto& a : replicas) {
    Replica r;
    r.address = std::move(a.address);
    r.weight = a.weight;
    r.public_host = std::move(a.public_host);
    r.tls_port = a.tls_port;
    replicas_.push_back(std::move(r));
  }
  rebuild_ring();
}

void Table::reconfigure(std::vector<config::ReplicaEntry> replicas,
                        const config::ProbeSettings& probe,
                        const config::BalanceSettings& balance) {
  std::vector<Replica> next;
  next.reserve(replicas.size());
  std::vector<bool> taken(replicas_.size(), false);
  for (auto& a : replicas) {
    Replica r;
    for (size_t j = 0; j < replicas_.size(); ++j) {
      if (!taken[j] && replicas_[j].address == a.address) {
        taken[j] = true;
        r = std::move(replicas_[j]);
        break;
      }
    }
    r.address = std::move(a.address);
    r.weight = a.weight;
    r.public_host = std::move(a.public_host);
    r.tls_port = a.tls_port;
    // Indices change: the prober reports every address again.
    r.resolved.clear();
    r.same_as.reset();
    next.push_back(std::move(r));
  }
  replicas_ = std::move(next);
  keepers_.clear();
  probe_ = probe;
  balance_ = balance;
  // Round-robin credit starts afresh with a new replica list or policy.
  rr_credit_.assign(replicas_.size(), 0);
  policy_ = balance.policy;
  up_dirty_ = true;
  ++sites_generation_;  // indices may have changed
  refreshed_at_.reset();
  rebuild_ring();
}

std::optional<size_t> Table::set_resolved(size_t i, const std::string& address) {
  if (i >= replicas_.size() || replicas_[i].resolved == address) return std::nullopt;
  Replica& r = replicas_[i];
  const std::string old = std::move(r.resolved);
  r.resolved = address;
  const bool was_kept = !r.same_as;
  r.same_as.reset();
  if (was_kept && !old.empty()) {
    // Its second spellings at the old address: the first takes its place,
    // the others follow that one. (A scan, but only when a kept replica's
    // address moves; at start every replica's address is new.)
    keepers_.erase(old);
    std::optional<size_t> heir;
    for (size_t j = 0; j < replicas_.size(); ++j) {
      if (replicas_[j].same_as != i) continue;
      replicas_[j].same_as = heir;
      if (!heir) {
        heir = j;
        keepers_[old] = j;
      }
    }
  }
  const auto [it, fresh] = keepers_.emplace(address, i);
  if (fresh) return std::nullopt;
  r.same_as = it->second;
  if (r.health != Health::Down) up_dirty_ = true;
  r.health = Health::Down;
  r.good_streak = r.bad_streak = 0;
  r.up_since.reset();
  r.drained_from_up = false;
  return it->second;
}

size_t Table::distinct_count() const {
  return static_cast<size_t>(std::count_if(replicas_.begin(), replicas_.end(),
                                           [](const Replica& r) { return !r.same_as; }));
}

std::vector<uint64_t> Table::ring_capacities() const {
  std::vector<uint64_t> caps;
  caps.reserve(replicas_.size());
  for (const auto& r : replicas_) caps.push_back(static_cast<uint64_t>(capacity_of(r)));
  return caps;
}

int Table::virtual_nodes(size_t i) const {
  // Equal capacities give every replica exactly kVirtualNodes points; point
  // v of a replica is the same hash whatever its count, so a capacity change
  // moves only the paths of the points added or removed.
  double sum = 0;
  for (uint64_t c : ring_caps_) sum += static_cast<double>(c);
  if (sum <= 0) return kVirtualNodes;
  const double mean = sum / static_cast<double>(ring_caps_.size());
  const double v = std::round(kVirtualNodes * static_cast<double>(ring_caps_[i]) / mean);
  return static_cast<int>(std::clamp(v, 1.0, static_cast<double>(kMaxVirtualNodes)));
}

void Table::rebuild_ring() {
  ring_dirty_ = false;
  ring_.clear();
  ring_caps_ = ring_capacities();
  ring_.reserve(replicas_.size() * kVirtualNodes);
  for (size_t i = 0; i < replicas_.size(); ++i) {
    const std::string key = ring_key(replicas_[i].address) + "#";
    const int nodes = virtual_nodes(i);
    for (int v = 0; v < nodes; ++v) {
      ring_.emplace_back(hash_key(key + std::to_string(v)), static_cast<uint32_t>(i));
    }
  }
  // Ties (two points with one hash) are ordered by index so the ring does not
  // depend on the sort's stability.
  std::sort(ring_.begin(), ring_.end());
}

void Table::probe_succeeded(size_t i, std::optional<std::chrono::microseconds> rtt,
                            const status::ReplicaStatus& st, Clock::time_point now) {
  // Not for a second spelling (a probe sent before it was found to be one).
  if (i >= replicas_.size() || replicas_[i].same_as) return;
  Replica& r = replicas_[i];
  const Health was = r.health;
  if (rtt) {
    const double ms = std::max(0.0, static_cast<double>(rtt->count()) / 1000.0);
    r.rtt_ms = r.rtt_ms ? (1 - kRttAlpha) * *r.rtt_ms + kRttAlpha * ms : ms;
    r.recent_rtt_ms.push_back(ms);
    if (r.recent_rtt_ms.size() > kRttWindow) r.recent_rtt_ms.erase(r.recent_rtt_ms.begin());
    r.base_rtt_ms = *std::min_element(r.recent_rtt_ms.begin(), r.recent_rtt_ms.end());
  }
  r.loss = (1 - kLossAlpha) * r.loss;
  r.reported_load = std::isfinite(st.load) && st.load >= 0 ? st.load : 0;
  r.reported_capacity = st.capacity;
  r.bytes_per_second =
      std::isfinite(st.bytes_per_second) && st.bytes_per_second >= 0 ? st.bytes_per_second : 0;
  r.sent_since_probe = 0;  // the clients we sent are in reported_load from now on
  r.last_probe = now;
  if (st.sites != r.last_status.sites || st.hosts != r.last_status.hosts ||
      st.host_sites != r.last_status.host_sites) {
    ++sites_generation_;
  }
  r.last_status = st;
  r.bad_streak = 0;
  r.last_error.clear();

  const uint32_t rise = std::max<uint32_t>(1, probe_.rise);
  switch (st.state) {
    case status::State::Starting:
      // Reachable but not ready (its content is not there yet); a replica
      // that restarted behind our back loses its standing and must rise again.
      r.good_streak = 0;
      r.last_error = "replica is starting";
      if (r.health != Health::Down) {
        r.health = Health::Down;
        r.up_since.reset();
      }
      r.drained_from_up = false;
      break;
    case status::State::Draining:
      // No new clients, at once.
      if (r.health == Health::Up) r.drained_from_up = true;
      if (r.health != Health::Draining) {
        r.health = Health::Draining;
        r.up_since.reset();
      }
      r.good_streak = 0;
      break;
    case status::State::Serving:
      ++r.good_streak;
      if (r.health != Health::Up && r.health != Health::Held &&
          (r.good_streak >= rise || (r.health == Health::Draining && r.drained_from_up))) {
        r.health = r.held ? Health::Held : Health::Up;
        r.up_since = now;  // slow start again: it had no clients while draining
        r.drained_from_up = false;
      }
      break;
  }
  // The ring follows capacities; rebuilt when next needed, not per probe
  // (thousands of replicas reporting their first capacity would sort the
  // ring thousands of times).
  if (static_cast<uint64_t>(capacity_of(r)) != ring_caps_[i]) ring_dirty_ = true;
  if (r.health != was) up_dirty_ = true;
  r.score = compute_score(r, now);
}

void Table::probe_failed(size_t i, std::string_view why, Clock::time_point now, Failure kind) {
  if (i >= replicas_.size() || replicas_[i].same_as) return;
  Replica& r = replicas_[i];
  const Health was = r.health;
  r.loss = (1 - kLossAlpha) * r.loss + kLossAlpha;
  ++r.probe_failures_total;
  r.last_probe = now;
  r.last_error = why;
  r.good_streak = 0;
  ++r.bad_streak;
  if (r.health != Health::Down &&
      (kind == Failure::Refused || r.bad_streak >= std::max<uint32_t>(1, probe_.fall))) {
    r.health = Health::Down;
    r.up_since.reset();
    r.drained_from_up = false;
  }
  if (r.health != was) up_dirty_ = true;
  r.score = compute_score(r, now);
}

void Table::set_held(size_t i, bool held, Clock::time_point now) {
  if (i >= replicas_.size()) return;
  Replica& r = replicas_[i];
  r.held = held;
  if (held && r.health == Health::Up) {
    r.health = Health::Held;
    up_dirty_ = true;
  } else if (!held && r.health == Health::Held) {
    r.health = Health::Up;
    r.up_since = now;
    up_dirty_ = true;
  }
}

size_t Table::up_count() const {
  return static_cast<size_t>(std::count_if(
      replicas_.begin(), replicas_.end(), [](const Replica& r) { return r.health == Health::Up; }));
}

Clock::duration Table::slow_start_window() const {
  return std::max<Clock::duration>(kSlowStartMin, probe_.interval * kSlowStartIntervals);
}

// score = (rtt + kRttFloorMs) x (1 + kLossWeight x loss) x (1 + load) x slow_start
//
//  - rtt: the base RTT in ms, the lowest of the last kRttWindow probes (the
//    probe timeout until one is known). kRttFloorMs keeps sub-millisecond
//    LAN jitter (0.1 vs 0.2 ms) from looking like a 2x difference; what is
//    left is roughly the latency a client pays. Not the EWMA: a replica
//    whose link is full answers probes after its queue (tens of ms behind a
//    tbf or a busy uplink), and multiplying that by (1 + load) counted the
//    same congestion twice, from one noisy sample a second: p2c then sent a
//    replica with spare bandwidth almost nothing while its queue held a few
//    ms (bench/balance, shifting: 21-35% of the clients where 40% was due).
//    A replica that really moved away raises its base within kRttWindow
//    probes.
//  - loss: EWMA of failed probes; a lost probe stands for a client that waits
//    for a timeout and retries elsewhere, so 25% loss doubles the cost.
//  - load: load_estimate() = reported load + clients sent since the probe /
//    capacity. A client sharing a replica with load x capacity others gets
//    roughly 1 / (1 + load) of it (processor sharing), so its transfer takes
//    (1 + load) times as long. Counting what we sent since the probe is what
//    stops a burst between two probes from piling on one replica.
//  - slow_start: 1 + kSlowStartPenalty x (time left in the window / window),
//    3x right after coming up, 1x once slow_start_window() has passed.
// Multiplying keeps every factor a relative cost, so no weights between
// unlike units are needed (the seed added 0.75 x loss% to 0.25 x ms: 1% of
// loss was worth 3 ms no matter how far the replica was).
double Table::compute_score(const Replica& r, Clock::time_point now) const {
  return score_at_load(r, load_estimate(r), now);
}

double Table::probe_score(const Replica& r, Clock::time_point now) const {
  return score_at_load(r, probe_load(r), now);
}

double Table::score_at_load(const Replica& r, double load, Clock::time_point now) const {
  const double rtt = r.base_rtt_ms ? *r.base_rtt_ms : static_cast<double>(probe_.timeout.count());
  double slow = 1;
  if (r.up_since) {
    const auto window = slow_start_window();
    const auto age = now - *r.up_since;
    if (age < window && window.count() > 0) {
      const double left = 1.0 - std::max(0.0, std::chrono::duration<double>(age).count() /
                                                  std::chrono::duration<double>(window).count());
      slow = 1 + kSlowStartPenalty * std::min(1.0, left);
    }
  }
  return (rtt + kRttFloorMs) * (1 + kLossWeight * r.loss) * (1 + load) * slow;
}

// byte_load: the busy clients of the up replicas (sum of reported load x
// capacity) shared out in proportion to the bytes/s each sends, per
// capacity. Same unit as the connection load and the same total, so the
// mean of the two only moves load between replicas: towards the ones whose
// clients are moving the bytes.
void Table::update_byte_loads() {
  double busy = 0, bps = 0;
  for (const auto& r : replicas_) {
    if (r.health != Health::Up) continue;
    busy += r.reported_load * capacity_of(r);
    bps += r.bytes_per_second;
  }
  const bool known = bps > 0 && busy > 0;
  for (auto& r : replicas_) {
    r.byte_load = known ? r.bytes_per_second / bps * busy / capacity_of(r) : -1;
  }
}

void Table::refresh_scores(Clock::time_point now) {
  update_byte_loads();
  for (auto& r : replicas_) r.score = compute_score(r, now);
  refreshed_at_ = now;
}

// What changes every score between probes is the time (slow start) and the
// fleet's byte loads, and refresh_scores() is O(replicas). A small fleet
// refreshes on every choice; a large one at most every kRefreshEvery, which
// at 10,000 replicas took a 302 from 3,100 to (bench/probe-scale) tens of
// thousands a second. A probe outcome and a client sent still update that
// replica's score at once, and p2c scores its two candidates at `now`.
void Table::refresh_for_choice(Clock::time_point now) {
  if (replicas_.size() > kRefreshEachChoiceMax && refreshed_at_ && now >= *refreshed_at_ &&
      now - *refreshed_at_ < kRefreshEvery) {
    return;
  }
  refresh_scores(now);
}

const std::vector<size_t>& Table::up_list() {
  if (up_dirty_) {
    up_cache_.clear();
    for (size_t i = 0; i < replicas_.size(); ++i) {
      if (replicas_[i].health == Health::Up) up_cache_.push_back(i);
    }
    up_dirty_ = false;
    build_rotation();
  }
  if (only_ == nullptr) return up_cache_;
  up_only_.clear();
  for (size_t i : up_cache_) {
    if (eligible(i)) up_only_.push_back(i);
  }
  return up_only_;
}

void Table::build_rotation() {
  rotation_.clear();
  if (policy_ != Policy::RoundRobin || up_cache_.empty()) return;
  uint64_t total = 0;
  for (size_t i : up_cache_) total += std::max<uint32_t>(1, replicas_[i].weight);
  if (total > kRotationMax || up_cache_.size() * total > kRotationWork) return;
  // The smooth weighted sequence from zero credit; it repeats after `total`.
  std::vector<double> credit(replicas_.size(), 0);
  for (uint64_t step = 0; step < total; ++step) {
    size_t best = up_cache_.front();
    for (size_t i : up_cache_) {
      credit[i] += std::max<uint32_t>(1, replicas_[i].weight);
      if (credit[i] > credit[best]) best = i;
    }
    credit[best] -= static_cast<double>(total);
    rotation_.push_back(static_cast<uint32_t>(best));
  }
}

void Table::prepare_snapshot() { up_list(); }

size_t Table::random_below(size_t n) {
  // Lemire's multiply-shift: the same numbers for a seed on every standard
  // library (std::uniform_int_distribution's are implementation-defined).
  return static_cast<size_t>((static_cast<unsigned __int128>(rng_()) * n) >> 64);
}

void Table::record_sent(size_t i, Clock::time_point now) {
  Replica& r = replicas_[i];
  r.sent_since_probe += 1;
  ++r.redirects_total;
  r.score = compute_score(r, now);
}

void Table::adopt(const Table& newer) {
  const auto rng = rng_;
  auto* ticket = shared_ticket_;
  auto credit = std::move(rr_credit_);
  *this = newer;
  rng_ = rng;
  shared_ticket_ = ticket;
  if (credit.size() == rr_credit_.size()) rr_credit_ = std::move(credit);
}

void Table::add_sent(size_t i, uint64_t n) {
  if (i >= replicas_.size()) return;
  replicas_[i].sent_since_probe += static_cast<double>(n);
  replicas_[i].redirects_total += n;
}
namespace {
// Sets a table's mask for the length of one choice.
class Only {
 public:
  Only(const std::vector<char>*& slot, const std::vector<char>* mask) : slot_(slot) {
    slot_ = mask;
  }
  ~Only() { slot_ = nullptr; }
  Only(const Only&) = delete;
  Only& operator=(const Only&) = delete;

 private:
  const std::vector<char>*& slot_;
};
}  // namespace

void Table::choose(std::string_view path, size_t count, Clock::time_point now,
                   std::vector<Choice>& out, const std::vector<char>* only) {
  const Only scope(only_, only);
  out.clear();
  out.reserve(std::min(count, replicas_.size()));
  refresh_for_choice(now);
  if (count == 0) return;
  if (policy_ == Policy::RoundRobin) {
    choose_round_robin(count, true, out);
  } else {
    rank_refreshed(path, count, now, out);
  }
  if (!out.empty()) record_sent(out.front().index, now);
}

std::vector<Choice> Table::choose(std::string_view path, size_t count, Clock::time_point now) {
  std::vector<Choice> out;
  choose(path, count, now, out);
  return out;
}

void Table::rank(std::string_view path, size_t count, Clock::time_point now,
                 std::vector<Choice>& out, const std::vector<char>* only) {
  const Only scope(only_, only);
  out.clear();
  refresh_for_choice(now);
  if (count == 0) return;
  rank_refreshed(path, count, now, out);
}

void Table::rank_refreshed(std::string_view path, size_t count, Clock::time_point now,
                           std::vector<Choice>& out) {
  switch (policy_) {
    case Policy::Best:
      return choose_best(count, now, out);
    case Policy::RoundRobin:
      return choose_round_robin(count, false, out);
    case Policy::LeastLoaded:
      return choose_least_loaded(count, out);
    case Policy::P2C:
      return choose_p2c(count, now, out);
    case Policy::Consistent:
      return choose_consistent(path, count, out);
  }
}

std::vector<Choice> Table::rank(std::string_view path, size_t count, Clock::time_point now) {
  std::vector<Choice> out;
  rank(path, count, now, out);
  return out;
}

std::vector<size_t>& Table::up_indices() {
  const auto& up = up_list();
  up_.reserve(replicas_.size());
  up_.assign(up.begin(), up.end());
  return up_;
}

template <typename Key>
void Table::ranked(std::vector<size_t>& idx, size_t count, Key key, std::vector<Choice>& out) {
  const size_t n = std::min(count, idx.size());
  std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(n), idx.end(),
                    [&](size_t a, size_t b) {
                      const double ka = key(replicas_[a]), kb = key(replicas_[b]);
                      return ka < kb || (ka == kb && a < b);
                    });
  for (size_t k = 0; k < n; ++k) out.push_back({idx[k], replicas_[idx[k]].score});
}

// Rank by the probe-time score, as the seed did: between two probes every
// client gets the same answer. Kept for comparison; it herds.
void Table::choose_best(size_t count, Clock::time_point now, std::vector<Choice>& out) {
  ranked(
      up_indices(), count, [&](const Replica& r) { return probe_score(r, now); }, out);
}

// Smooth weighted round-robin (the scheme of nginx's upstream module): on
// every pick each up replica gains its weight in credit, the one with the
// most credit is chosen and pays back the total. The weights are the
// operator's (config::ReplicaEntry, 1 unless set), never measured: as in
// HAProxy and nginx, round-robin is the predictable policy that does what it
// was told; following load is the other policies' job. A replica of weight 2
// gets every other client of a 2:1:1 fleet, interleaved, never in runs. Ties
// in credit go to the lower index. Fallbacks are the next ones by credit.
void Table::choose_round_robin(size_t count, bool advance, std::vector<Choice>& out) {
  std::vector<size_t>& order = up_indices();
  if (order.empty()) return;
  if (shared_ticket_ != nullptr && !rotation_.empty()) {
    // Workers share one place in the rotation: the first choice is the
    // ticket's, the fallbacks the next distinct replicas after it.
    const uint64_t ticket = advance ? shared_ticket_->fetch_add(1, std::memory_order_relaxed)
                                    : shared_ticket_->load(std::memory_order_relaxed);
    const size_t n = std::min(count, order.size());
    seen_.assign(replicas_.size(), 0);
    for (size_t k = 0; k < rotation_.size() && out.size() < n; ++k) {
      const size_t i = rotation_[(ticket + k) % rotation_.size()];
      if (seen_[i] || !eligible(i)) continue;  // eligible: the request's site
      seen_[i] = 1;
      out.push_back({i, replicas_[i].score});
    }
    return;
  }
  if (rr_credit_.size() != replicas_.size()) rr_credit_.assign(replicas_.size(), 0);
  credit_.assign(rr_credit_.begin(), rr_credit_.end());
  double total = 0;
  for (size_t i : order) {
    const double w = std::max<uint32_t>(1, replicas_[i].weight);
    credit_[i] += w;
    total += w;
  }
  // The most credit first, ties to the lower index (order is by index).
  const size_t n = std::min(count, order.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end(),
                    [&](size_t a, size_t b) {
                      return credit_[a] > credit_[b] || (credit_[a] == credit_[b] && a < b);
                    });
  for (size_t k = 0; k < n; ++k) out.push_back({order[k], replicas_[order[k]].score});
  if (advance) {
    credit_[order.front()] -= total;
    rr_credit_.swap(credit_);
  }
}

void Table::choose_least_loaded(size_t count, std::vector<Choice>& out) {
  std::vector<size_t>& up = up_indices();
  // Lowest load estimate; among equals the lower score.
  const size_t n = std::min(count, up.size());
  std::partial_sort(up.begin(), up.begin() + static_cast<std::ptrdiff_t>(n), up.end(),
                    [&](size_t a, size_t b) {
                      const double la = load_estimate(replicas_[a]);
                      const double lb = load_estimate(replicas_[b]);
                      if (la != lb) return la < lb;
                      if (replicas_[a].score != replicas_[b].score) {
                        return replicas_[a].score < replicas_[b].score;
                      }
                      return a < b;
                    });
  for (size_t k = 0; k < n; ++k) out.push_back({up[k], replicas_[up[k]].score});
}

// Power of two choices: two distinct random up replicas, the lower score
// first. The best of two random ones avoids both herding (Best) and the
// blindness of pure random; the rest ranked by score are the fallbacks.
void Table::choose_p2c(size_t count, Clock::time_point now, std::vector<Choice>& out) {
  const std::vector<size_t>& all = up_list();
  if (all.size() > kP2CRankAllMax) return choose_p2c_large(all, count, now, out);
  std::vector<size_t>& up = up_indices();
  if (up.empty()) return;
  size_t first = up[0];
  if (up.size() >= 2) {
    const size_t a = random_below(up.size());
    size_t b = random_below(up.size() - 1);
    if (b >= a) ++b;  // distinct from a, uniform over the others
    const Replica& ra = replicas_[up[a]];
    const Replica& rb = replicas_[up[b]];
    first = rb.score < ra.score ? up[b] : up[a];
  }
  out.push_back({first, replicas_[first].score});
  if (count > 1) {
    up.erase(std::find(up.begin(), up.end(), first));
    ranked(
        up, count - 1, [](const Replica& r) { return r.score; }, out);
  }
}

// A large fleet: the first choice as above, each fallback again the better
// of two random up replicas not yet named, the fallbacks then in score
// order; the candidates are scored at `now`. A few dozen scores instead of
// ranking every replica on every client, and the fallbacks are spread too
// (ranked ones would send every failed-over client to the same few).
void Table::choose_p2c_large(const std::vector<size_t>& up, size_t count, Clock::time_point now,
                             std::vector<Choice>& out) {
  const size_t want = std::min(count, up.size());
  auto named = [&](size_t i) {
    return std::any_of(out.begin(), out.end(), [i](const Choice& c) { return c.index == i; });
  };
  // A draw not yet named: up.size() > 2 x want, so a few tries find one; the
  // bound only keeps a pathological generator from looping.
  auto draw = [&]() {
    size_t i = up[random_below(up.size())];
    for (int tries = 0; tries < 64 && named(i); ++tries) i = up[random_below(up.size())];
    return i;
  };
  while (out.size() < want) {
    const size_t a = draw();
    size_t b = draw();
    for (int tries = 0; tries < 64 && b == a; ++tries) b = draw();
    Replica& ra = replicas_[a];
    Replica& rb = replicas_[b];
    ra.score = compute_score(ra, now);
    rb.score = compute_score(rb, now);
    const size_t pick = rb.score < ra.score ? b : a;
    if (named(pick)) break;  // only if the generator keeps repeating itself
    out.push_back({pick, replicas_[pick].score});
  }
  std::sort(out.begin() + 1, out.end(), [](const Choice& x, const Choice& y) {
    return x.score < y.score || (x.score == y.score && x.index < y.index);
  });
}

// Consistent hashing with bounded load (Mirrokni, Thorup, Zadimoghaddam
// 2018): walk the ring clockwise from the path's point and take the first up
// replica that can take one more client without going above
// ceil(factor x mean load x its capacity) clients, the mean load being
// clients over capacity of all up replicas. The ceiling is what makes room
// for the first clients when every load is 0; with equal capacities it is
// exactly the paper's bound, so no replica ever holds more than
// ceil(factor x mean). Load here is load_estimate(): reported load plus what
// we sent since the probe. The ring gives each replica points in proportion
// to its capacity, so the paths (not only the overflow) follow capacity. The
// fallbacks are the next distinct up replicas on the ring after the chosen
// one, then the ones skipped as full (in ring order).
void Table::choose_consistent(std::string_view path, size_t count, std::vector<Choice>& out) {
  if (ring_dirty_) rebuild_ring();
  if (ring_.empty()) return;
  size_t up = 0;
  double held_total = 0;  // clients, over the up replicas
  double cap_total = 0;
  for (size_t i = 0; i < replicas_.size(); ++i) {
    const Replica& r = replicas_[i];
    if (r.health != Health::Up || !eligible(i)) continue;
    ++up;
    held_total += load_estimate(r) * capacity_of(r);
    cap_total += capacity_of(r);
  }
  if (up == 0) return;
  const double factor = std::max(1.0, balance_.hash_load_factor);

  const uint64_t h = hash_key(path);
  auto start = std::lower_bound(ring_.begin(), ring_.end(), std::make_pair(h, uint32_t{0}));
  size_t pos = static_cast<size_t>(start - ring_.begin());

  std::vector<char>& seen = seen_;
  seen.assign(replicas_.size(), 0);
  std::vector<size_t>& skipped = skipped_;  // up but full, in ring order
  skipped.clear();
  skipped.reserve(replicas_.size());  // grown once, not as more are skipped
  for (size_t step = 0; step < ring_.size() && out.size() < count; ++step) {
    const size_t i = ring_[(pos + step) % ring_.size()].second;
    if (seen[i]) continue;
    seen[i] = 1;
    const Replica& r = replicas_[i];
    if (r.health != Health::Up || !eligible(i)) continue;
    if (out.empty()) {
      const double cap = capacity_of(r);
      const double held = load_estimate(r) * cap;  // in clients of this replica
      // Mean load after this client, weighted by capacity: a replica of
      // twice the capacity may hold twice the clients.
      const double mean_after = (held_total + 1.0) / cap_total;
      const double bound = std::ceil(factor * mean_after * cap - 1e-9);
      if (held + 1.0 > bound + 1e-9) {
        skipped.push_back(i);
        continue;
      }
    }
    out.push_back({i, r.score});
  }
  if (out.empty()) {
    // Fractional reported loads can leave no replica under the bound; then
    // the least loaded one, the first such on the ring, overshoots least.
    auto it = std::min_element(skipped.begin(), skipped.end(), [&](size_t a, size_t b) {
      return load_estimate(replicas_[a]) < load_estimate(replicas_[b]);
    });
    const size_t first = *it;
    out.push_back({first, replicas_[first].score});
    skipped.erase(it);
  }
  for (size_t i : skipped) {
    if (out.size() >= count) break;
    out.push_back({i, replicas_[i].score});
  }
}

}  // namespace cdn::balancer
