// SPDX-License-Identifier: MIT
// The balancer's purges: a PURGE accepted once (allow-list and token checked
// by the caller) goes into the ledger (common/purge/ledger.hpp) as owed by
// every replica, and each replica is sent what it owes, oldest first, over a
// connection of its own (not the prober's). The client's answer waits for
// every replica's answer to this purge and lists them: 200 when all
// acknowledged, 202 when some could not be reached; those are held out of
// the choice (Table::set_held) and sent their purges again every
// kRetryEvery until they acknowledge, which is what lets them serve again.
//
// The replicas are sent the balancer's own token ([admin] token_file): the
// fleet shares one purge token.
//
// The ledger outlives a restart: with a state file ([admin] state_dir, or
// systemd's StateDirectory), a purge is written there (temp file, fsync,
// rename) before it is sent, acknowledgements at the next retry tick (one
// that is lost only has a replica purge twice: purges are idempotent). At
// start the file is read back and the replicas that owe are held, so one
// that missed a purge gets it before its first client even if the balancer
// restarted meanwhile. A file that cannot be read back is logged and
// ignored (and replaced at the next write). Lives on the main loop; owned by the
// Balancer. The fronts (on any worker loop) hand it their PURGE requests
// and get the answer back through a daemon::Answer.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <string>
#include <vector>

#include "common/net/client.hpp"
#include "common/net/server.hpp"
#include "common/purge/ledger.hpp"
#include "common/uv/handle.hpp"
#include "daemons/balancerd/table.hpp"
#include "daemons/workers.hpp"

namespace cdn::balancer {

inline constexpr std::chrono::milliseconds kPurgeRetryEvery{250};
inline constexpr std::chrono::milliseconds kPurgeTimeout{2000};

class Purger {
 public:
  Purger(uv_loop_t* loop, Table& table) : loop_(loop), table_(table) {}
  // Where the ledger is kept ("": memory only). The first call reads the
  // file (call reconfigured() after); later ones (a reload) write the ledger
  // to the new place.
  void use_state_file(std::string path);
  // The token purges are sent with ([admin] token_file), also to replicas
  // owing purges from before a restart.
  void set_token(std::string token) { token_ = std::move(token); }
  void start();
  void stop();
  // The table's replicas changed (reload): the ledger forgets removed ones,
  // held flags are set again on the new indices.
  void reconfigured();
  // Accept `r`; `answer` is called once every replica answered (or the
  // purger stops). `only`: the replicas of the purge's site (a mask over
  // the table's replicas, sites.hpp); null: every replica.
  void purge(purge::Request r, const std::string& token, daemon::Answer answer,
             const std::vector<char>* only = nullptr);
  size_t owed_total() const { return ledger_.owed_total(); }
  size_t replicas_owing() const { return ledger_.replicas_owing(); }
  uint64_t purges_total() const { return purges_total_; }
  uint64_t forwarded_total() const { return forwarded_total_; }
  uint64_t forward_failures_total() const { return forward_failures_total_; }

 private:
  struct Channel {
    net::ClientConnection::Ptr conn;
    std::string resolved;  // the address conn was made for
    bool busy = false;
  };
  // One replica's part of a client's answer.
  struct Part {
    std::string replica;
    bool done = false;
    bool acknowledged = false;
    int status = 0;
    std::string error;
    std::string answer;  // the replica's JSON
  };
  struct Waiter {
    uint64_t id;
    daemon::Answer answer;
    std::string description;
    std::vector<Part> parts;
    size_t left = 0;
  };
  // The replicas by name, those of `only` when given.
  std::vector<std::string> names(const std::vector<char>* only = nullptr) const;
  std::optional<size_t> index_of(const std::string& name) const;
  // Send replica `name` the oldest purge it owes, unless one is in flight.
  void pump(const std::string& name);
  void answered(const std::string& name, uint64_t id, bool ok, int status, std::string error,
                const std::string& body);
  void settle(Waiter& w, const std::string& name, uint64_t id, bool ok, int status,
              const std::string& error, const std::string& body);
  void finish(Waiter& w);
  void retry();
  // The ledger to the state file, when there is one (logs failures).
  void save();

  uv_loop_t* loop_;
  std::string state_file_;
  bool state_read_ = false;
  bool dirty_ = false;  // acknowledged since the last save
  Table& table_;
  purge::Ledger ledger_;
  std::string token_;
  std::map<std::string, Channel> channels_;
  std::list<Waiter> waiters_;
  uv::Ptr<uv_timer_t> timer_;
  uint64_t purges_total_ = 0;
  uint64_t forwarded_total_ = 0;
  uint64_t forward_failures_total_ = 0;
};

}  // namespace cdn::balancer
