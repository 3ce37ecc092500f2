// SPDX-License-Identifier: MIT
// The balancer's ledger of purges owed: every purge it accepts is owed by
// every replica until that replica acknowledges it (200 to the forwarded
// PURGE). A replica that owes a purge is held out of the choice (Table's
// Health::Held) and is sent its purges, oldest first, until it owes none:
// a replica down or unreachable during a purge gets it when it returns,
// before it is sent clients again, so none serves purged content after the
// purge was reported done.
//
// Pure: replicas are named by their configured address ("host:port"), which
// survives a reload that reorders them; times are passed in.
//
// Bounds: at most kMaxOwed purges per replica. Past that, its queue is
// replaced by one hard purge of "/*" (everything): a replica away for a long
// time comes back empty rather than with an unbounded queue.
//
// Persistence: save() writes the ledger as text and load() reads it back,
// so that a balancer restart does not forget what replicas owe (the daemon
// writes the file atomically, see daemons/balancerd/purger.hpp). One line a
// record, fields separated by a blank, each %-encoded (bytes <= 0x20, >= 0x7f
// and '%'; "-" is the empty string):
//   cdn-purge-ledger 1
//   next ID
//   purge ID AT_MS url|prefix|tag SOFT(0|1) SITE TARGET [TAG...]
//   owes REPLICA ID [ID...]            (oldest first)
//   end                                (a file cut short is refused)
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/purge/purge.hpp"

namespace cdn::purge {

inline constexpr size_t kMaxOwed = 1024;

class Ledger {
 public:
  struct Entry {
    uint64_t id = 0;
    Request request;
    int64_t at_ms = 0;  // when it was accepted
  };

  // A purge owed by these replicas from now; returns its id (1, 2, ...).
  // request.id is set to the id's text (forwarded as CDN-Purge-Id).
  uint64_t add(Request request, const std::vector<std::string>& replicas, int64_t now_ms);
  // The replica applied purge `id`. Unknown ids and replicas are ignored
  // (an answer that outlived a reload): acknowledging is idempotent.
  void ack(const std::string& replica, uint64_t id);
  // The purges it owes, oldest first (the one to send next is front()).
  std::vector<const Entry*> owed(const std::string& replica) const;
  bool owes(const std::string& replica) const;
  // The replicas still configured (a reload): the others owe nothing now.
  void keep_only(const std::vector<std::string>& replicas);
  // Replicas owing at least one purge, and purges owed in all.
  size_t replicas_owing() const;
  size_t owed_total() const;
  const Entry* find(uint64_t id) const;

  std::string save() const;
  // nullopt, with `error`, for a text save() did not write: a version, a
  // record or a figure it does not know, an id owed but not listed, more
  // than kMaxOwed owed by one replica.
  static std::optional<Ledger> load(std::string_view text, std::string& error);

 private:
  void release(uint64_t id);
  uint64_t next_id_ = 1;
  // The purges, each with how many replicas still owe it.
  std::map<uint64_t, std::pair<Entry, size_t>> entries_;
  std::unordered_map<std::string, std::deque<uint64_t>> owed_;
};

}  // namespace cdn::purge
