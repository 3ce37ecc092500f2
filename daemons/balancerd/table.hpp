// SPDX-License-Identifier: MIT
// The balancer's view of its replicas and the choice among them. Pure: the
// prober (probe.cc) feeds it probe outcomes with explicit timestamps, the
// request handler asks it for a ranking. No I/O, no clock reads, so unit tests
// and benchmarks drive it directly. Deterministic given the seed.
//
// Glossary:
//  - load estimate: the reported load at the last probe plus the clients we
//    sent since that probe, in the same unit (sent_since_probe / capacity).
//    The reported load is active/capacity, averaged with the byte load
//    (the fleet's busy clients shared out by bytes/s, per capacity) once
//    replicas report bytes/s, so one replica streaming the large files
//    counts as busier than one holding as many idle keep-alives. Counting
//    what we sent since the probe is what keeps a burst between two probes
//    from landing on one replica.
//  - base RTT: the lowest probe RTT of the last kRttWindow probes. A replica
//    whose link is busy answers probes late (its queue), but that is its
//    load, which the load estimate counts already; the base RTT is the
//    distance that is left when the queue empties.
//  - score: lower is better; see compute_score() in table.cc for the formula.
//  - slow start: a replica that just came up is penalised, linearly less
//    over slow_start_window(), so it is not flooded with a whole share at once.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/config/ini.hpp"
#include "common/config/settings.hpp"
#include "common/status/status.hpp"

namespace cdn::balancer {

using Clock = std::chrono::steady_clock;

// Held: reachable and serving, but it owes purges (purge::Ledger): no
// client is sent to it until it has applied them, when it becomes Up.
enum class Health { Down, Up, Draining, Held };

// How sure a failed probe is that the replica is gone. Refused: nothing
// listens on its port (killed, or drained and closed its listener), so it
// goes down at once instead of after `fall` probes; a timeout or a reset may
// be a hiccup and counts towards `fall`.
enum class Failure { Soft, Refused };
std::string_view to_string(Health h) noexcept;

// Parsed from its name once, with the settings (config::policy_from_string).
using Policy = config::BalancePolicy;
using config::policy_from_string;

// Figures of the score; exposed so the documentation, tests and /.cdn/locate
// can refer to them.
inline constexpr double kRttAlpha = 0.3;    // EWMA weight of a new RTT sample
inline constexpr double kLossAlpha = 0.3;   // EWMA weight of a new probe outcome (0 ok, 1 failed)
inline constexpr double kRttFloorMs = 1.0;  // added to the RTT: sub-ms differences are noise
inline constexpr size_t kRttWindow = 10;    // probes whose lowest RTT is the base RTT
inline constexpr double kLossWeight = 4.0;  // 25% loss doubles the score
inline constexpr double kSlowStartPenalty = 2.0;  // score x (1 + 2) just up, x 1 at the end
inline constexpr std::chrono::milliseconds kSlowStartMin{10'000};
inline constexpr uint32_t kSlowStartIntervals = 5;  // window >= 5 probe intervals
inline constexpr uint64_t kAssumedCapacity = 1000;  // replicad's default, when none reported
inline constexpr int kVirtualNodes = 100;  // ring points of a replica of mean capacity (consistent)
inline constexpr int kMaxVirtualNodes = 1000;  // cap for one replica far above the mean
// Fleet sizes above which a choice stops touching every replica: scores are
// refreshed at most every kRefreshEvery, and p2c names its fallbacks by more
// random pairs instead of ranking every up replica.
inline constexpr size_t kRefreshEachChoiceMax = 256;
inline constexpr std::chrono::milliseconds kRefreshEvery{100};
inline constexpr size_t kP2CRankAllMax = 64;
// Shared round-robin (share_rotation): the longest rotation kept, and the
// most work spent building it (replicas x total weight).
inline constexpr uint64_t kRotationMax = 65536;
inline constexpr uint64_t kRotationWork = 4'000'000;

struct Replica {
  config::HostPort address;
  uint32_t weight = 1;  // the operator's round-robin weight (config::ReplicaEntry)
  // Where it serves HTTPS (config::ReplicaEntry): tls_port 0 is none; the
  // https:// URL names public_host, or the address's host when empty.
  std::string public_host;
  uint16_t tls_port = 0;
  Health health = Health::Down;  // a new replica starts down until `rise` good probes
  uint32_t good_streak = 0;
  uint32_t bad_streak = 0;
  std::optional<double> rtt_ms;  // EWMA of probe round-trip time (shown in status)
  // The lowest RTT of the last kRttWindow probes: the replica's distance
  // without the queueing its own traffic adds (what the score goes by).
  std::optional<double> base_rtt_ms;
  std::vector<double> recent_rtt_ms;  // those probes' RTTs, oldest first
  double loss = 0;                    // EWMA of probe failure (0..1)
  double reported_load = 0;           // from the replica's status: active / capacity
  uint64_t reported_capacity = 0;
  double bytes_per_second = 0;  // from the replica's status: recent send rate
  // reported bytes/s in load units (see the glossary); < 0 while the fleet
  // reports no bytes/s. Kept current by the table.
  double byte_load = -1;
  double sent_since_probe = 0;  // clients we sent since its last probe
  std::optional<Clock::time_point> last_probe;
  std::optional<Clock::time_point> up_since;  // for slow start
  std::string last_error;                     // why the last probe failed
  status::ReplicaStatus last_status;
  uint64_t redirects_total = 0;
  uint64_t probe_failures_total = 0;
  double score = 0;  // lower is better; kept current by the table
  // Draining entered from Up: a return to serving is Up at once (it had
  // already proven itself); from Down it must still make `rise` good probes.
  bool drained_from_up = false;
  // The address its host resolved to ("127.0.0.1:33000"); empty until known.
  std::string resolved;
  // It owes purges (set_held): never Up until released.
  bool held = false;
  // Another replica at the same resolved address (the one listed as
  // "localhost:p" and "127.0.0.1:p"): this one is a second spelling of it,
  // stays Down, is neither probed nor shown, and takes no share.
  std::optional<size_t> same_as;
};

// The load at the last probe: reported_load, or its mean with byte_load
// when that is known.
double probe_load(const Replica& r) noexcept;
// probe_load + sent_since_probe / capacity (kAssumedCapacity when the
// replica reported none).
double load_estimate(const Replica& r) noexcept;

// One ranked candidate with the figures behind the choice.
struct Choice {
  size_t index;
  double score;
};

class Table {
 public:
  Table(std::vector<config::ReplicaEntry> replicas, const config::ProbeSettings& probe,
        const config::BalanceSettings& balance, uint64_t seed = std::random_device{}());

  // Replace settings and the replica list (SIGHUP); replicas that stay keep
  // their state (and take their new weight).
  // New ones start Down, removed ones are dropped; indices may change, so
  // callers re-read replicas().
  void reconfigure(std::vector<config::ReplicaEntry> replicas, const config::ProbeSettings& probe,
                   const config::BalanceSettings& balance);

  // Probe outcomes. An index out of range (a probe that outlived a reload) is ignored.
  // `rtt`: none for a status document that came unasked (the later documents
  // of a stream): it tells health and load, not the round trip.
  void probe_succeeded(size_t i, std::optional<std::chrono::microseconds> rtt,
                       const status::ReplicaStatus& st, Clock::time_point now);
  void probe_failed(size_t i, std::string_view why, Clock::time_point now,
                    Failure kind = Failure::Soft);

  // Up to `count` healthy replicas, best first, by the configured policy.
  // Empty when no replica is up. Records the first as sent (load estimate).
  // Consistent hashes `path` as given (the caller decides whether a query
  // string is part of it); the other policies ignore it.
  // The answer goes into `out` (cleared first): a caller that keeps it
  // across requests makes the choice without allocating, as the table keeps
  // its own scratch space (a 302 is then allocation-free).
  // `only`, when given: a mask over replicas() (sites.hpp), the others are
  // passed over as if they were down (the replicas of another site).
  void choose(std::string_view path, size_t count, Clock::time_point now, std::vector<Choice>& out,
              const std::vector<char>* only = nullptr);
  std::vector<Choice> choose(std::string_view path, size_t count, Clock::time_point now);
  // The same ranking without recording anything as sent (for /.cdn/locate,
  // which answers a question and sends no client). P2C still draws from the
  // generator, RoundRobin does not advance.
  void rank(std::string_view path, size_t count, Clock::time_point now, std::vector<Choice>& out,
            const std::vector<char>* only = nullptr);
  std::vector<Choice> rank(std::string_view path, size_t count, Clock::time_point now);

  // Replica i's host resolved to `address` (the prober tells: at once for an
  // IP, on every change for a name). Replicas are compared by it: the first
  // to have an address keeps it, a later one at the same address becomes
  // same_as that one (and leaves that state when its address moves, or when
  // the one it duplicated moves away). Returns the replica that i now
  // duplicates, when that is new (the caller warns once).
  std::optional<size_t> set_resolved(size_t i, const std::string& address);

  // Workers (balancer.hpp): a worker's table takes a newer snapshot's state
  // but keeps its own random generator and, with the same replica count,
  // its round-robin credit (else each adoption would restart the rotation
  // and every worker would draw the same p2c pairs).
  void adopt(const Table& newer);
  void reseed(uint64_t seed) { rng_.seed(seed); }
  // `n` clients sent to replica i by others (the workers), counted like
  // those choose() records. Out of range: ignored.
  void add_sent(size_t i, uint64_t n);
  // Round-robin over several tables (the workers'): each choice takes the
  // next ticket of `ticket` and the rotation's replica at it, so the weights
  // hold over all workers together rather than per worker. Kept by adopt();
  // null (the default): the table's own credit. Only for fleets whose
  // rotation is short (total weight <= kRotationMax).
  void share_rotation(std::atomic<uint64_t>* ticket) { shared_ticket_ = ticket; }
  // Brings the up list and rotation up to date before the table is copied
  // (so that every worker's copy need not).
  void prepare_snapshot();

  // Replica i owes purges (true) or has applied them all (false). Held, an
  // Up replica becomes Held at once, and one that rises becomes Held
  // instead of Up; released, a Held one is Up (slow start from `now`).
  void set_held(size_t i, bool held, Clock::time_point now);

  const std::vector<Replica>& replicas() const { return replicas_; }
  // Moves whenever a replica's sites or hosts (its status) or the replica
  // list change: when a SiteRouter must be rebuilt.
  uint64_t sites_generation() const { return sites_generation_; }
  // Replicas not same_as another one: what status counts and shows.
  size_t distinct_count() const;
  size_t up_count() const;
  Policy policy() const { return policy_; }
  // How long a replica that came up stays under the slow-start penalty:
  // max(kSlowStartMin, kSlowStartIntervals x probe interval).
  Clock::duration slow_start_window() const;
  // Recompute every replica's score at `now` (choose() does it too); for
  // status pages that show scores between requests.
  void refresh_scores(Clock::time_point now);

 private:
  double compute_score(const Replica& r, Clock::time_point now) const;
  // The score the seed used: last probe's figures only, no estimate of what
  // we sent since (Best ranks by it, which is why it herds).
  double probe_score(const Replica& r, Clock::time_point now) const;
  double score_at_load(const Replica& r, double load, Clock::time_point now) const;
  void rebuild_ring();
  // Ring points of replica i: kVirtualNodes x capacity / mean capacity, so
  // a replica's share of the paths follows its capacity.
  int virtual_nodes(size_t i) const;
  // The capacities the ring was built with; a change rebuilds it.
  std::vector<uint64_t> ring_capacities() const;
  void update_byte_loads();
  size_t random_below(size_t n);
  void record_sent(size_t i, Clock::time_point now);

  // rank() once the scores are refreshed and `out` is empty (choose() has
  // done both already).
  void rank_refreshed(std::string_view path, size_t count, Clock::time_point now,
                      std::vector<Choice>& out);
  // Each appends up to `count` choices to `out`.
  void choose_best(size_t count, Clock::time_point now, std::vector<Choice>& out);
  void choose_round_robin(size_t count, bool advance, std::vector<Choice>& out);
  // rotation_ from up_cache_ (see share_rotation).
  void build_rotation();
  void choose_least_loaded(size_t count, std::vector<Choice>& out);
  void choose_p2c(size_t count, Clock::time_point now, std::vector<Choice>& out);
  void choose_p2c_large(const std::vector<size_t>& up, size_t count, Clock::time_point now,
                        std::vector<Choice>& out);
  // The up replicas' indices, cached until a health changes (not to be
  // modified: up_indices() gives a copy that may be).
  const std::vector<size_t>& up_list();
  // refresh_scores() for a choice: every time in a small fleet, at most
  // every kRefreshEvery in a large one (see table.cc).
  void refresh_for_choice(Clock::time_point now);
  void choose_consistent(std::string_view path, size_t count, std::vector<Choice>& out);
  // The up replicas' indices, in up_ (scratch, reused).
  std::vector<size_t>& up_indices();
  // The `count` best of `idx` by `key` (ties by index, so results are
  // deterministic), appended to `out` with the replicas' scores.
  template <typename Key>
  void ranked(std::vector<size_t>& idx, size_t count, Key key, std::vector<Choice>& out);

  std::vector<Replica> replicas_;
  uint64_t sites_generation_ = 0;
  // The mask of the choice in progress (choose/rank's `only`), and the up
  // replicas it leaves (built per choice: not cached like up_cache_).
  const std::vector<char>* only_ = nullptr;
  std::vector<size_t> up_only_;
  bool eligible(size_t i) const { return only_ == nullptr || (i < only_->size() && (*only_)[i]); }
  // Resolved address -> the replica kept at it (see set_resolved).
  std::unordered_map<std::string, size_t> keepers_;
  config::ProbeSettings probe_;
  config::BalanceSettings balance_;
  Policy policy_ = Policy::P2C;
  std::mt19937_64 rng_;
  std::vector<double> rr_credit_;  // smooth weighted round-robin, per replica
  // Scratch for the choice, kept so that a choice allocates nothing.
  std::vector<size_t> up_;
  std::vector<size_t> up_cache_;  // see up_list()
  bool up_dirty_ = true;
  std::vector<uint32_t> rotation_;  // one period of the weighted sequence (round-robin)
  std::atomic<uint64_t>* shared_ticket_ = nullptr;
  std::optional<Clock::time_point> refreshed_at_;
  std::vector<double> credit_;
  std::vector<char> seen_;
  std::vector<size_t> skipped_;
  // Consistent hashing: kVirtualNodes points per replica, sorted by hash.
  std::vector<std::pair<uint64_t, uint32_t>> ring_;
  std::vector<uint64_t> ring_caps_;
  bool ring_dirty_ = false;
};

}  // namespace cdn::balancer
