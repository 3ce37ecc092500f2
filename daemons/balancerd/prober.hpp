// Health probing: every replica's GET /.cdn/status on a timer, over a
// kept-alive connection, with a timeout. Outcomes go to the Table, which
// owns every decision; this is only the I/O. One connection per replica and
// one timer for them all on the loop: no thread or process per replica.
//
// The timer drives a wheel of 10 ms slots (each an intrusive list of probes,
// so scheduling never allocates): a probe waits in the slot of its next send
// or, while in flight, of its timeout, and every probe due in a slot goes out
// in one wake-up. A send is at most half a slot early or late; a timeout at
// most one slot late, never early. 10,000 libuv timers instead (one heap,
// re-armed per probe, plus each connection's own timeout timer) cost more
// CPU than the probes' parsing, and woke the loop a thousand times a second.
#pragma once

#include <uv.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/config/settings.hpp"
#include "common/net/address.hpp"
#include "common/net/client.hpp"
#include "common/uv/handle.hpp"
#include "daemons/balancerd/table.hpp"

namespace cdn::balancer {

class Prober {
 public:
  Prober(uv_loop_t* loop, Table& table);
  ~Prober();

  // (Re)start probing every replica of the table with these settings.
  void start(const config::ProbeSettings& settings);
  void stop();
  uint64_t probes_total() const { return probes_total_; }
  uint64_t probe_failures_total() const { return failures_total_; }
  // Probes sent early because a replica closed the idle probe connection.
  uint64_t early_probes_total() const { return early_probes_total_; }

 private:
  struct Probe {
    Prober* prober = nullptr;
    size_t index = 0;
    std::string host_header;
    std::optional<net::Address> address;
    std::string resolve_error;
    net::ClientConnection::Ptr conn;
    Clock::time_point sent{};
    std::string body;
    bool in_flight = false;
    // The wheel: due when the tick (loop ms / kTickMs) reaches due_tick.
    bool queued = false;
    uint64_t due_tick = 0;
    Probe* prev = nullptr;
    Probe* next = nullptr;
  };
  void send(Probe& p);
  void done(Probe& p, const net::ClientResult& r, const http::Response& resp);
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
  std::vector<std::unique_ptr<Probe>> probes_;
  std::vector<Probe*> slots_;   // list heads, one per tick modulo their count
  std::vector<Probe*> firing_;  // reused by on_tick
  uv::Ptr<uv_timer_t> timer_;
  uint64_t next_tick_ = 0;            // first tick whose slot on_tick has not walked
  uint64_t armed_tick_ = UINT64_MAX;  // tick the timer is set for
  uint64_t probes_total_ = 0;
  uint64_t failures_total_ = 0;
  uint64_t early_probes_total_ = 0;
};

}  // namespace cdn::balancer
