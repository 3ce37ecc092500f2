// The balancer's view of its replicas and the choice among them. Pure: the
// prober (probe.cc) feeds it probe outcomes with explicit timestamps, the
// request handler asks it for a ranking. No I/O, no clock reads, so unit tests
// and benchmarks drive it directly.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/ini.hpp"
#include "common/config/settings.hpp"
#include "common/status/status.hpp"

namespace cdn::balancer {

using Clock = std::chrono::steady_clock;

enum class Health { Down, Up, Draining };
std::string_view to_string(Health h) noexcept;

enum class Policy { Best, RoundRobin, LeastLoaded, P2C, Consistent };
std::optional<Policy> policy_from_string(std::string_view s) noexcept;
std::string_view to_string(Policy p) noexcept;

struct Replica {
  config::HostPort address;
  Health health = Health::Down;  // a new replica starts down until `rise` good probes
  uint32_t good_streak = 0;
  uint32_t bad_streak = 0;
  std::optional<double> rtt_ms;      // EWMA of probe round-trip time
  double loss = 0;                   // EWMA of probe failure (0..1)
  double reported_load = 0;          // from the replica's status
  uint64_t reported_capacity = 0;
  double sent_since_probe = 0;       // clients we sent since its last probe
  std::optional<Clock::time_point> last_probe;
  std::optional<Clock::time_point> up_since;  // for slow start
  std::string last_error;            // why the last probe failed
  status::ReplicaStatus last_status;
  uint64_t redirects_total = 0;
  double score = 0;                  // lower is better; kept current by the table
};

// One ranked candidate with the figures behind the choice.
struct Choice {
  size_t index;
  double score;
};

class Table {
 public:
  Table(std::vector<config::HostPort> replicas, const config::ProbeSettings& probe,
        const config::BalanceSettings& balance, uint64_t seed = std::random_device{}());

  // Replace settings and the replica list (SIGHUP); replicas that stay keep their state.
  void reconfigure(std::vector<config::HostPort> replicas, const config::ProbeSettings& probe,
                   const config::BalanceSettings& balance);

  void probe_succeeded(size_t i, std::chrono::microseconds rtt, const status::ReplicaStatus& st,
                       Clock::time_point now);
  void probe_failed(size_t i, std::string_view why, Clock::time_point now);

  // Up to `count` healthy replicas, best first, by the configured policy.
  // Empty when no replica is up. Records the first as sent (load estimate).
  std::vector<Choice> choose(std::string_view path, size_t count, Clock::time_point now);

  const std::vector<Replica>& replicas() const { return replicas_; }
  size_t up_count() const;
  Policy policy() const { return policy_; }

 private:
  double compute_score(const Replica& r, Clock::time_point now) const;

  std::vector<Replica> replicas_;
  config::ProbeSettings probe_;
  config::BalanceSettings balance_;
  Policy policy_ = Policy::P2C;
  std::mt19937_64 rng_;
  size_t rr_next_ = 0;
};

}  // namespace cdn::balancer
