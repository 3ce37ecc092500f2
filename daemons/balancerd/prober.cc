#include "daemons/balancerd/prober.hpp"

#include <spdlog/spdlog.h>

#include <random>

#include "common/log/log.hpp"
#include "common/status/status.hpp"

namespace cdn::balancer {

namespace {
constexpr size_t kMaxStatusBody = 64 * 1024;
constexpr std::chrono::milliseconds kMinProbeGap{50};
}  // namespace

Prober::Prober(uv_loop_t* loop, Table& table) : loop_(loop), table_(table) {}

Prober::~Prober() { stop(); }

void Prober::stop() { probes_.clear(); }

void Prober::start(const config::ProbeSettings& settings) {
  stop();
  settings_ = settings;
  std::minstd_rand rng(std::random_device{}());
  const auto& replicas = table_.replicas();
  probes_.reserve(replicas.size());
  for (size_t i = 0; i < replicas.size(); ++i) {
    auto p = std::make_unique<Probe>();
    p->prober = this;
    p->index = i;
    p->host_header = replicas[i].address.str();
    p->address =
        net::resolve(replicas[i].address.host, replicas[i].address.port, &p->resolve_error);
    Probe* raw = p.get();
    if (p->address) {
      p->conn = net::ClientConnection::create(loop_, *p->address);
      // A replica that dies or drains closes our idle probe connection at
      // once (the kernel does it for a killed process): probe now instead of
      // at the next turn, which finds the port closed and takes the replica
      // out within milliseconds.
      p->conn->set_on_idle_close([raw] { raw->prober->peer_closed(*raw); });
    }
    p->timer = uv::make_timer(loop_, [raw] { raw->prober->send(*raw); });
    // Spread the first round over a fraction of the interval so thousands of
    // replicas are not probed in one burst; the first probes still come quickly.
    const auto spread = std::max<int64_t>(1, settings_.interval.count() / 10);
    schedule(*p, std::chrono::milliseconds(rng() % static_cast<uint64_t>(spread)));
    probes_.push_back(std::move(p));
  }
}

void Prober::peer_closed(Probe& p) {
  if (p.in_flight) return;
  ++early_probes_total_;
  // At most one early probe per kMinProbeGap, so a peer that closes every
  // connection after answering cannot make us probe in a loop.
  const auto since = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - p.sent);
  schedule(p, since >= kMinProbeGap ? std::chrono::milliseconds(0) : kMinProbeGap - since);
}

void Prober::schedule(Probe& p, std::chrono::milliseconds delay) {
  uv::timer_start(p.timer.get(), static_cast<uint64_t>(std::max<int64_t>(0, delay.count())), 0);
}

void Prober::send(Probe& p) {
  if (p.in_flight) return;
  ++probes_total_;
  if (!p.address) {
    ++failures_total_;
    table_.probe_failed(p.index, p.resolve_error, Clock::now());
    schedule(p, settings_.interval);
    return;
  }
  p.in_flight = true;
  p.body.clear();
  p.sent = Clock::now();
  Probe* raw = &p;
  net::ClientCallbacks cb;
  cb.on_body = [raw](std::string_view piece) {
    if (raw->body.size() + piece.size() > kMaxStatusBody) return false;
    raw->body.append(piece);
    return true;
  };
  cb.on_done = [raw](const net::ClientResult& r, const http::Response& resp) {
    raw->prober->done(*raw, r, resp);
  };
  p.conn->request("GET", "/.cdn/status", p.host_header, "User-Agent: cdn-balancerd\r\n",
                  settings_.timeout, std::move(cb));
}

void Prober::done(Probe& p, const net::ClientResult& r, const http::Response& resp) {
  p.in_flight = false;
  const auto now = Clock::now();
  const auto rtt = std::chrono::duration_cast<std::chrono::microseconds>(now - p.sent);
  const auto& before = table_.replicas()[p.index];
  const Health was = before.health;
  std::string why;
  Failure kind = Failure::Soft;
  if (!r.ok()) {
    why = r.message;
    if (r.code == UV_ECONNREFUSED) kind = Failure::Refused;
  } else if (resp.status != 200) {
    why = "status answered " + std::to_string(resp.status);
  } else if (auto st = status::decode(p.body)) {
    table_.probe_succeeded(p.index, rtt, *st, now);
  } else {
    why = "status answer is not a status document";
  }
  if (!why.empty()) {
    ++failures_total_;
    table_.probe_failed(p.index, why, now, kind);
  }
  const auto& after = table_.replicas()[p.index];
  if (after.health != was) {
    if (after.health == Health::Down) {
      cdn::log::event(spdlog::level::warn, {{cdn::log::kReplica, after.address.str()}},
                      "replica {} is down: {}", after.address.str(), after.last_error);
    } else {
      cdn::log::event(spdlog::level::info, {{cdn::log::kReplica, after.address.str()}},
                      "replica {} is {}", after.address.str(), to_string(after.health));
    }
  }
  // While a replica is between states (some good probes while down, or
  // failures while up), probe it faster so the change is confirmed sooner.
  const bool changing = (after.health == Health::Down && after.good_streak > 0) ||
                        (after.health != Health::Down && after.bad_streak > 0);
  auto next = changing ? std::max<std::chrono::milliseconds>(settings_.interval / 4, kMinProbeGap)
                       : settings_.interval;
  const auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(now - p.sent);
  schedule(p, next - std::min(spent, next));
}

}  // namespace cdn::balancer
