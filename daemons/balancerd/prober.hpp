// SPDX-License-Identifier: MIT
// Health probing: every replica's GET /.cdn/status on a timer, over a
// kept-alive connection, with a timeout. Outcomes go to the Table, which
// owns every decision; this is only the I/O. One connection per replica and
// one timer for them all on the loop: no thread or process per replica.
//
// A steady replica (up, no failure since) is asked for a stream instead
// (GET /.cdn/status?watch=INTERVAL&count=N, settings.stream documents): it
// sends a status document at once, whose arrival measures the RTT, then one
// per interval, each of which counts as a probe; the next stream is asked for
// an interval after the last document. At 1 Hz that is one read per replica
// and second here, where a request costs a send, the replica's wake-up (on
// loopback the sender's kernel runs the receiver's TCP work) and a read: the
// cost that kept 10,000 replicas above 10% of a core. A stream that stops
// (no document within interval + timeout) or breaks is a failed probe, and
// the replica goes back to one request per probe until it is steady again; a
// replica that answers the stream's request with a plain document (a server
// that does not stream), or whose stream failed where a poll then worked, is
// polled for kPollsAfterStreamTrouble probes before a stream is tried again.
// After gRPC's health Watch and ORCA's out-of-band load reports.
//
// The timer drives a wheel of 10 ms slots (each an intrusive list of probes,
// so scheduling never allocates): a probe waits in the slot of its next send
// or, while in flight, of its timeout, and every probe due in a slot goes out
// in one wake-up. A send is at most half a slot early or late; a timeout at
// most one slot late, never early. 10,000 libuv timers instead (one heap,
// re-armed per probe, plus each connection's own timeout timer) cost more
// CPU than the probes' parsing, and woke the loop a thousand times a second.
//
// Host names are resolved off the loop (resolver.hpp), at start, on every
// reload, every kResolveEvery after an answer and, after a failure, again
// with a backoff from one second up to kResolveEvery; a name keeps its last
// good address while a lookup fails, and a probe follows a new address from
// its next send. IP literals never go to a resolver.
#pragma once

#include <uv.h>

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/config/settings.hpp"
#include "common/net/address.hpp"
#include "common/net/client.hpp"
#include "common/status/status.hpp"
#include "common/uv/handle.hpp"
#include "daemons/balancerd/resolver.hpp"
#include "daemons/balancerd/table.hpp"

namespace cdn::balancer {

class Prober {
 public:
  Prober(uv_loop_t* loop, Table& table);
  ~Prober();

  // (Re)start probing every replica of the table with these settings; host
  // names are looked up again (their last addresses are kept meanwhile).
  void start(const config::ProbeSettings& settings);
  // Everything closed, lookups in flight abandoned.
  void stop();
  uint64_t probes_total() const { return probes_total_; }
  uint64_t probe_failures_total() const { return failures_total_; }
  // Probes sent early because a replica closed the idle probe connection.
  uint64_t early_probes_total() const { return early_probes_total_; }
  // Status documents that came on streams (each also counted in probes_total).
  uint64_t streamed_total() const { return documents_total_; }

 private:
  struct Probe {
    Prober* prober = nullptr;
    size_t index = 0;
    std::string host_header;
    std::string name;  // the host to resolve; empty for an IP literal
    uint16_t port = 0;
    std::optional<net::Address> address;  // the last good one
    std::string resolve_error;            // why there is none yet
    net::ClientConnection::Ptr conn;
    Clock::time_point sent{};
    std::string body;
    bool in_flight = false;
    // Polls to make before asking for a stream again: after a plain answer
    // to a stream request (a server that does not stream), or a stream that
    // failed where the poll after it succeeded (e.g. a proxy that buffers
    // the stream, or garbage in it), so the replica is judged by its polls.
    uint32_t polls_before_stream = 0;
    bool stream_failed = false;  // the last stream failed; the next poll decides
    bool asked_stream = false;   // the request in flight asks for a stream
    bool streaming = false;      // its answer is a stream (a document per line)
    uint32_t documents = 0;      // documents of that stream so far
    Clock::time_point last_document{};
    // The wheel: due when the tick (loop ms / kTickMs) reaches due_tick.
    bool queued = false;
    uint64_t due_tick = 0;
    Probe* prev = nullptr;
    Probe* next = nullptr;
  };
  // A host name's lookups: its last good address, the schedule of the next.
  struct Name {
    std::optional<net::Address> address;  // port 0
    std::vector<size_t> probes;           // indices of the replicas with this host
    bool in_flight = false;
    uint32_t failures = 0;  // in a row
    uint64_t due_ms = 0;    // loop time of the next lookup
  };
  // Close the probes (reload or stop); names and the resolver stay.
  void clear_probes();
  void resolve_due();
  void resolved(const std::string& host, std::optional<net::Address> address,
                const std::string& error);
  // Probe p's replica is at `address` (its port set): tell the table, which
  // compares replicas by address.
  void use_address(Probe& p, const net::Address& address);
  void send(Probe& p);
  void done(Probe& p, const net::ClientResult& r, const http::Response& resp);
  // A piece of a stream's body: every complete line is a status document.
  // False (the stream is aborted) on a line that is not one.
  bool stream_piece(Probe& p, std::string_view piece);
  // One outcome to the table (`st` null: a failure, `why`), with a log line
  // when the replica's health changed; true while its health is changing.
  bool report(Probe& p, std::optional<std::chrono::microseconds> rtt,
              const status::ReplicaStatus* st, std::string_view why, Failure kind,
              Clock::time_point now);
  void schedule(Probe& p, std::chrono::milliseconds delay);
  // At loop time `due_ms` (uv_now), rounded to the nearest tick (the next
  // send: on average on time, so 1 Hz stays 1 Hz) or up (a timeout: never
  // early).
  enum class Round { Nearest, Up };
  void schedule_at(Probe& p, uint64_t due_ms, Round round);
  void unlink(Probe& p);
  void peer_closed(Probe& p);
  void on_tick();
  void fire(Probe& p);
  void arm();

  uv_loop_t* loop_;
  Table& table_;
  config::ProbeSettings settings_;
  std::string stream_target_;  // "/.cdn/status?watch=MS&count=N"
  uint64_t documents_total_ = 0;
  std::vector<std::unique_ptr<Probe>> probes_;
  std::vector<Probe*> slots_;   // list heads, one per tick modulo their count
  std::vector<Probe*> firing_;  // reused by on_tick
  uv::Ptr<uv_timer_t> timer_;
  std::unique_ptr<Resolver> resolver_;
  std::unordered_map<std::string, Name> names_;
  uv::Ptr<uv_timer_t> names_timer_;   // every second while there are names
  uint64_t next_tick_ = 0;            // first tick whose slot on_tick has not walked
  uint64_t armed_tick_ = UINT64_MAX;  // tick the timer is set for
  bool held_up_ = false;              // this wake-up came kHeldUpMs late or more
  uint64_t probes_total_ = 0;
  uint64_t failures_total_ = 0;
  uint64_t early_probes_total_ = 0;
};

}  // namespace cdn::balancer
