// Health probing: every replica's GET /.cdn/status on a timer, over a
// kept-alive connection, with a timeout. Outcomes go to the Table, which
// owns every decision; this is only the I/O. One timer and one connection
// per replica on the loop: no thread or process per replica.
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
    uv::Ptr<uv_timer_t> timer;
    Clock::time_point sent{};
    std::string body;
    bool in_flight = false;
  };
  void send(Probe& p);
  void done(Probe& p, const net::ClientResult& r, const http::Response& resp);
  void schedule(Probe& p, std::chrono::milliseconds delay);
  void peer_closed(Probe& p);

  uv_loop_t* loop_;
  Table& table_;
  config::ProbeSettings settings_;
  std::vector<std::unique_ptr<Probe>> probes_;
  uint64_t probes_total_ = 0;
  uint64_t failures_total_ = 0;
  uint64_t early_probes_total_ = 0;
};

}  // namespace cdn::balancer
