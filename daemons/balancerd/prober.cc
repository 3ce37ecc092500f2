// SPDX-License-Identifier: MIT
#include "daemons/balancerd/prober.hpp"

#include <spdlog/spdlog.h>

#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "common/log/log.hpp"
#include "common/status/status.hpp"

namespace cdn::balancer {

namespace {
constexpr size_t kMaxStatusBody = 64 * 1024;
constexpr std::chrono::milliseconds kMinProbeGap{50};
constexpr uint64_t kTickMs = 10;
// 5.12 s of slots: the usual intervals and timeouts fit in one turn; a
// longer delay waits in its slot for the turns in between (walked, skipped).
constexpr size_t kSlots = 512;
// A minute at the default interval: a server that cannot stream is asked
// again now and then (it may have been upgraded), at the cost of one probe.
constexpr uint32_t kPollsAfterStreamTrouble = 60;
constexpr size_t kFirstRoundPerMs = 10;
constexpr int64_t kFirstRoundSpreadMs = 100;
constexpr uint64_t kHeldUpMs = 50;
// Lookups at a time: a resolver that does not answer holds a thread for its
// timeout (10 s by default); names beyond this wait their turn.
constexpr size_t kResolverThreads = 4;
constexpr std::chrono::milliseconds kResolveEvery{30'000};
constexpr std::chrono::milliseconds kResolveRetryMin{1'000};

// Between states (some good probes while down, or failures while up): probed
// faster so that the change is confirmed sooner.
bool changing(const Replica& r) {
  return (r.health == Health::Down && r.good_streak > 0) ||
         (r.health != Health::Down && r.bad_streak > 0);
}
}  // namespace

Prober::Prober(uv_loop_t* loop, Table& table)
    : loop_(loop), table_(table), slots_(kSlots, nullptr) {}

Prober::~Prober() { stop(); }

void Prober::clear_probes() {
  timer_.reset();
  armed_tick_ = UINT64_MAX;
  std::fill(slots_.begin(), slots_.end(), nullptr);
  probes_.clear();
}

void Prober::stop() {
  // Closed here, on the loop (stop() comes with the drain), not left to the
  // destructor, which may run once the loop is gone.
  clear_probes();
  names_timer_.reset();
  resolver_.reset();
  names_.clear();
}

namespace {
net::Address with_port(net::Address a, uint16_t port) {
  if (a.storage.ss_family == AF_INET) {
    reinterpret_cast<sockaddr_in*>(&a.storage)->sin_port = htons(port);
  } else if (a.storage.ss_family == AF_INET6) {
    reinterpret_cast<sockaddr_in6*>(&a.storage)->sin6_port = htons(port);
  }
  return a;
}

bool same_address(const net::Address& a, const net::Address& b) {
  if (a.storage.ss_family != b.storage.ss_family) return false;
  const size_t n = a.storage.ss_family == AF_INET    ? sizeof(sockaddr_in)
                   : a.storage.ss_family == AF_INET6 ? sizeof(sockaddr_in6)
                                                     : sizeof(sockaddr_storage);
  return std::memcmp(&a.storage, &b.storage, n) == 0;
}
}  // namespace

void Prober::start(const config::ProbeSettings& settings) {
  clear_probes();
  settings_ = settings;
  stream_target_ = "/.cdn/status?watch=" + std::to_string(settings_.interval.count()) +
                   "&count=" + std::to_string(settings_.stream);
  timer_ = uv::make_timer(loop_, [this] { on_tick(); });
  for (auto& [host, n] : names_) n.probes.clear();
  std::minstd_rand rng(std::random_device{}());
  const auto& replicas = table_.replicas();
  probes_.reserve(replicas.size());
  for (size_t i = 0; i < replicas.size(); ++i) {
    auto p = std::make_unique<Probe>();
    p->prober = this;
    p->index = i;
    p->host_header = replicas[i].address.str();
    p->port = replicas[i].address.port;
    if (auto literal = ip_literal(replicas[i].address.host, p->port)) {
      use_address(*p, *literal);
    } else {
      p->name = replicas[i].address.host;
      Name& n = names_[p->name];
      n.probes.push_back(i);
      if (n.address) {
        use_address(*p, with_port(*n.address, p->port));
      } else {
        p->resolve_error = "no address yet: " + p->name + " is being looked up";
      }
    }
    // Spread the first round so that thousands of replicas are not probed in
    // one burst: over a tenth of the interval but at most kFirstRoundSpreadMs
    // (the first probes come at once even with interval = 1h), and for a
    // large fleet at most kFirstRoundPerMs new connections a millisecond, up
    // to the whole interval. 10,000 connects in 100 ms kept the fakes of
    // bench/probe-scale (and the balancer itself) busy past the timeout:
    // every replica's first probe could fail.
    const int64_t spread =
        std::clamp<int64_t>(static_cast<int64_t>(replicas.size() / kFirstRoundPerMs),
                            std::min<int64_t>(settings_.interval.count() / 10, kFirstRoundSpreadMs),
                            settings_.interval.count());
    schedule(
        *p, std::chrono::milliseconds(rng() % static_cast<uint64_t>(std::max<int64_t>(1, spread))));
    probes_.push_back(std::move(p));
  }
  // Names no replica has any more are forgotten (an answer still coming is
  // dropped); the others are looked up again now, a reload being the
  // operator's way to say that they may have moved.
  std::erase_if(names_, [](const auto& kv) { return kv.second.probes.empty(); });
  if (names_.empty()) {
    names_timer_.reset();
    return;
  }
  if (!resolver_) {
    resolver_ = std::make_unique<Resolver>(
        loop_, kResolverThreads,
        [this](const std::string& host, std::optional<net::Address> address,
               const std::string& error) { resolved(host, address, error); });
  }
  for (auto& [host, n] : names_) n.due_ms = 0;
  if (!names_timer_) {
    names_timer_ = uv::make_timer(loop_, [this] { resolve_due(); });
    uv::timer_start(names_timer_.get(), 1000, 1000);
  }
  resolve_due();
}

void Prober::resolve_due() {
  const uint64_t now = uv_now(loop_);
  for (auto& [host, n] : names_) {
    if (n.in_flight || n.due_ms > now) continue;
    n.in_flight = true;
    resolver_->lookup(host);
  }
}

void Prober::resolved(const std::string& host, std::optional<net::Address> address,
                      const std::string& error) {
  const auto it = names_.find(host);
  if (it == names_.end()) return;
  Name& n = it->second;
  n.in_flight = false;
  const uint64_t now = uv_now(loop_);
  if (!address) {
    ++n.failures;
    const uint64_t delay = std::min<uint64_t>(
        kResolveRetryMin.count() << std::min<uint32_t>(n.failures - 1, 16), kResolveEvery.count());
    n.due_ms = now + delay;
    const std::string keeping = n.address ? "keeping its last address " + n.address->str()
                                          : std::string("its replicas stay down until it resolves");
    if (n.failures == 1) {
      spdlog::warn("cannot resolve {}: {}; {}, trying again in {} ms", host, error, keeping, delay);
    } else {
      SPDLOG_DEBUG("cannot resolve {} ({} times in a row): {}; trying again in {} ms", host,
                   n.failures, error, delay);
    }
    for (size_t i : n.probes) {
      if (!probes_[i]->address) probes_[i]->resolve_error = error;
    }
    return;
  }
  if (!n.address) {
    spdlog::info("{} resolves to {}", host, address->str());
  } else if (!same_address(*n.address, *address)) {
    spdlog::info("{} now resolves to {} (was {})", host, address->str(), n.address->str());
  } else if (n.failures > 0) {
    spdlog::info("{} resolves again ({})", host, address->str());
  }
  n.failures = 0;
  n.due_ms = now + static_cast<uint64_t>(kResolveEvery.count());
  n.address = address;
  for (size_t i : n.probes) use_address(*probes_[i], with_port(*address, probes_[i]->port));
}

void Prober::use_address(Probe& p, const net::Address& address) {
  if (p.address && same_address(*p.address, address)) return;
  p.address = address;
  p.resolve_error.clear();
  const auto same = table_.set_resolved(p.index, address.str());
  if (same) {
    const auto& rs = table_.replicas();
    spdlog::warn("replica {} is {}, as is replica {}: the same replica listed twice, counted once",
                 rs[p.index].address.str(), address.str(), rs[*same].address.str());
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
  schedule_at(p, uv_now(loop_) + static_cast<uint64_t>(std::max<int64_t>(0, delay.count())),
              Round::Nearest);
}

void Prober::schedule_at(Probe& p, uint64_t due_ms, Round round) {
  unlink(p);
  // Never before the next tick: the slot of the current tick may have been
  // walked already.
  const uint64_t up = round == Round::Up ? kTickMs - 1 : kTickMs / 2;
  p.due_tick = std::max((due_ms + up) / kTickMs, uv_now(loop_) / kTickMs + 1);
  Probe*& head = slots_[p.due_tick % kSlots];
  p.prev = nullptr;
  p.next = head;
  if (head != nullptr) head->prev = &p;
  head = &p;
  p.queued = true;
  if (p.due_tick < armed_tick_) arm();
}

void Prober::unlink(Probe& p) {
  if (!p.queued) return;
  if (p.prev != nullptr) {
    p.prev->next = p.next;
  } else {
    slots_[p.due_tick % kSlots] = p.next;
  }
  if (p.next != nullptr) p.next->prev = p.prev;
  p.prev = p.next = nullptr;
  p.queued = false;
}

// The timer for the first slot, from the current tick on, that holds a probe
// (possibly one due only in a later turn: that wake-up finds nothing due and
// arms again). A scan of at most kSlots heads, on a wake-up that sends a
// slot's worth of probes.
void Prober::arm() {
  const uint64_t now = uv_now(loop_);
  const uint64_t from = std::max(next_tick_, now / kTickMs);
  for (uint64_t t = from; t < from + kSlots; ++t) {
    if (slots_[t % kSlots] == nullptr) continue;
    armed_tick_ = t;
    const uint64_t at = t * kTickMs;
    uv::timer_start(timer_.get(), at > now ? at - now : 0, 0);
    return;
  }
  armed_tick_ = UINT64_MAX;
  uv_timer_stop(&timer_->raw);
}

void Prober::on_tick() {
  const uint64_t now = uv_now(loop_);
  // Woken this late, the loop was held up (a big metrics page, a stopped
  // process): answers that came meanwhile are still unread, since libuv runs
  // timers before it polls for I/O. Timeouts due now wait one more tick.
  held_up_ = armed_tick_ != UINT64_MAX && now > armed_tick_ * kTickMs + kHeldUpMs;
  // Tick 0 is never due (schedule_at puts probes after the current tick):
  // no probe rescheduled while this runs arms the timer; arm() at the end does.
  armed_tick_ = 0;
  const uint64_t now_tick = now / kTickMs;
  // Every slot from the first not yet walked up to now (all of them once,
  // if the loop was held up for a whole turn).
  uint64_t from = next_tick_;
  if (now_tick >= from + kSlots) from = now_tick + 1 - kSlots;
  firing_.clear();
  for (uint64_t t = from; t <= now_tick; ++t) {
    for (Probe* p = slots_[t % kSlots]; p != nullptr;) {
      Probe* next = p->next;
      if (p->due_tick <= now_tick) {
        unlink(*p);
        firing_.push_back(p);
      }
      p = next;
    }
  }
  next_tick_ = now_tick + 1;
  // Fired after the walk: a probe rescheduled by fire() lands in a later slot.
  for (Probe* p : firing_) fire(*p);
  arm();
}

void Prober::fire(Probe& p) {
  if (!p.in_flight) {
    send(p);
    return;
  }
  // In flight: this was its timeout, unless the answer made progress since.
  const uint64_t deadline = p.conn->progress_deadline();
  if (deadline > uv_now(loop_)) {
    schedule_at(p, deadline, Round::Up);
  } else if (held_up_) {
    schedule_at(p, uv_now(loop_) + kTickMs, Round::Up);  // read first, then judge
  } else {
    p.conn->expire();  // done() schedules the next probe
  }
}

void Prober::send(Probe& p) {
  if (p.in_flight) return;
  if (table_.replicas()[p.index].same_as) {
    // Another spelling of a replica that is probed: nothing to ask, but its
    // address may move (then the table says so) before the next turn.
    schedule(p, settings_.interval);
    return;
  }
  if (!p.address) {
    report(p, std::nullopt, nullptr, p.resolve_error, Failure::Soft, Clock::now());
    schedule(p, settings_.interval);
    return;
  }
  if (!p.conn || !same_address(p.conn->address(), *p.address)) {
    // First use, or its host moved: a connection to the new address.
    p.conn = net::ClientConnection::create(loop_, *p.address);
    p.conn->use_external_timer();
    // A replica that dies or drains closes our idle probe connection at
    // once (the kernel does it for a killed process): probe now instead of
    // at the next turn, which finds the port closed and takes the replica
    // out within milliseconds.
    Probe* raw = &p;
    p.conn->set_on_idle_close([raw] { raw->prober->peer_closed(*raw); });
  }
  const auto& replica = table_.replicas()[p.index];
  p.asked_stream = settings_.stream > 1 && p.polls_before_stream == 0 &&
                   replica.health == Health::Up && replica.bad_streak == 0;
  if (!p.asked_stream && p.polls_before_stream > 0) --p.polls_before_stream;
  p.streaming = false;
  p.documents = 0;
  p.in_flight = true;
  p.body.clear();
  p.sent = Clock::now();
  Probe* raw = &p;
  net::ClientCallbacks cb;
  if (p.asked_stream) {
    cb.on_headers = [raw](const http::Response& resp) {
      raw->streaming = resp.status == 200 && resp.chunked &&
                       resp.header("Content-Type").value_or("").starts_with("application/x-ndjson");
      return true;
    };
  }
  cb.on_body = [raw](std::string_view piece) {
    if (raw->streaming) return raw->prober->stream_piece(*raw, piece);
    if (raw->body.size() + piece.size() > kMaxStatusBody) return false;
    raw->body.append(piece);
    return true;
  };
  cb.on_done = [raw](const net::ClientResult& r, const http::Response& resp) {
    raw->prober->done(*raw, r, resp);
  };
  // A stream's documents come an interval apart: each may take that long.
  const auto timeout = p.asked_stream ? settings_.interval + settings_.timeout : settings_.timeout;
  p.conn->request("GET", p.asked_stream ? std::string_view(stream_target_) : "/.cdn/status",
                  p.host_header, "User-Agent: cdn-balancerd\r\n", timeout, std::move(cb));
  // Its timeout; done() replaces it with the next probe.
  if (p.in_flight) schedule_at(p, p.conn->progress_deadline(), Round::Up);
}

bool Prober::stream_piece(Probe& p, std::string_view piece) {
  if (p.body.size() + piece.size() > kMaxStatusBody) return false;
  p.body.append(piece);
  size_t from = 0;
  for (size_t nl; (nl = p.body.find('\n', from)) != std::string::npos; from = nl + 1) {
    const auto now = Clock::now();
    const auto st = status::decode(std::string_view(p.body).substr(from, nl - from));
    if (!st) return false;  // done() reports the abort
    ++documents_total_;
    // The first document answers the request: its delay is the round trip.
    // The others were sent on the replica's clock.
    std::optional<std::chrono::microseconds> rtt;
    if (p.documents == 0) rtt = std::chrono::duration_cast<std::chrono::microseconds>(now - p.sent);
    ++p.documents;
    p.last_document = now;
    report(p, rtt, &*st, {}, Failure::Soft, now);
  }
  p.body.erase(0, from);
  return true;
}

bool Prober::report(Probe& p, std::optional<std::chrono::microseconds> rtt,
                    const status::ReplicaStatus* st, std::string_view why, Failure kind,
                    Clock::time_point now) {
  ++probes_total_;  // each outcome: an answer, a failure, a streamed document
  const Health was = table_.replicas()[p.index].health;
  if (st != nullptr) {
    table_.probe_succeeded(p.index, rtt, *st, now);
  } else {
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
  return changing(after);
}

void Prober::done(Probe& p, const net::ClientResult& r, const http::Response& resp) {
  p.in_flight = false;
  const auto now = Clock::now();
  const auto fast = std::max<std::chrono::milliseconds>(settings_.interval / 4, kMinProbeGap);
  if (p.streaming) {
    if (r.ok() && p.documents > 0) {
      // The stream ended (its count, or the replica is draining): the next
      // one an interval after its last document, as a probe would have come.
      const auto next = changing(table_.replicas()[p.index]) ? fast : settings_.interval;
      const auto since =
          std::chrono::duration_cast<std::chrono::milliseconds>(now - p.last_document);
      schedule(p, next - std::min(since, next));
      return;
    }
    if (r.error == net::ClientError::Reset && p.documents > 0) {
      // The replica closed it: most likely it died (the kernel closes a
      // killed process's sockets at once). Ask now instead of counting a
      // failure: a refused connection then takes it out within milliseconds.
      ++early_probes_total_;
      p.sent = now;
      schedule(p, std::chrono::milliseconds(0));
      return;
    }
    p.stream_failed = true;
    const std::string why = r.ok() ? "status stream ended without a document"
                            : r.error == net::ClientError::Aborted
                                ? "status stream: not a status document"
                                : "status stream: " + r.message;
    const bool between = report(p, std::nullopt, nullptr, why,
                                r.code == UV_ECONNREFUSED ? Failure::Refused : Failure::Soft, now);
    schedule(p, between ? fast : settings_.interval);
    return;
  }
  if (p.asked_stream && r.ok()) {
    // Answered with one document (or an error) instead of a stream: this
    // server does not stream.
    p.polls_before_stream = kPollsAfterStreamTrouble;
    SPDLOG_DEBUG("replica {} does not stream its status: polling", p.host_header);
  }
  const auto rtt = std::chrono::duration_cast<std::chrono::microseconds>(now - p.sent);
  std::optional<status::ReplicaStatus> st;
  std::string why;
  Failure kind = Failure::Soft;
  if (!r.ok()) {
    why = r.message;
    if (r.code == UV_ECONNREFUSED) kind = Failure::Refused;
  } else if (resp.status != 200) {
    why = "status answered " + std::to_string(resp.status);
  } else if (!(st = status::decode(p.body))) {
    why = "status answer is not a status document";
  }
  if (p.stream_failed && st) {
    // The stream failed but a plain request works: the trouble is the stream.
    p.polls_before_stream = kPollsAfterStreamTrouble;
    cdn::log::event(spdlog::level::info, {{cdn::log::kReplica, p.host_header}},
                    "replica {}: its status stream failed ({}), polling it instead", p.host_header,
                    table_.replicas()[p.index].last_error);
  }
  p.stream_failed = false;  // or the poll failed too: the replica's trouble
  const bool between = report(p, rtt, st ? &*st : nullptr, why, kind, now);
  const auto next = between ? fast : settings_.interval;
  const auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(now - p.sent);
  schedule(p, next - std::min(spent, next));
}

}  // namespace cdn::balancer
