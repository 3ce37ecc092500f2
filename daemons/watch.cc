// SPDX-License-Identifier: MIT
#include "daemons/watch.hpp"

#include <fmt/format.h>

#include <charconv>
#include <optional>

#include "common/http/path.hpp"

namespace cdn::daemon {

namespace {
constexpr uint64_t kWatchIntervalMin = 100, kWatchIntervalMax = 60'000;
constexpr uint64_t kWatchCountDefault = 60, kWatchCountMax = 3'600;
// Daemon-wide: a watch is a balancer's or an operator's dashboard, and a
// daemon has a few of them.
constexpr size_t kMaxWatches = 64;

std::optional<uint64_t> number_in(std::string_view text, uint64_t lo, uint64_t hi) {
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < lo || v > hi)
    return std::nullopt;
  return v;
}
}  // namespace

bool StatusWatches::serve(net::Exchange& ex) {
  const auto query = http::query_of(ex.request().target);
  if (ex.is_head() || ex.request().version_minor < 1 || !http::query_param(query, "watch")) {
    return false;
  }
  const auto interval = number_in(http::query_param(query, "watch").value_or(""), kWatchIntervalMin,
                                  kWatchIntervalMax);
  const auto count_param = http::query_param(query, "count");
  const auto count =
      count_param ? number_in(*count_param, 1, kWatchCountMax) : std::optional(kWatchCountDefault);
  if (!interval || !count) {
    ex.reply(400, fmt::format("watch=MS ({}..{}) [&count=N (1..{})]", kWatchIntervalMin,
                              kWatchIntervalMax, kWatchCountMax));
    return true;
  }
  if (watches_.size() >= kMaxWatches) {
    ex.reply(503, "too many status watches", {{"Retry-After", "1"}});
    return true;
  }
  auto w = std::make_unique<Watch>();
  w->answer = ex.defer();
  w->left = static_cast<uint32_t>(*count);
  auto& h = ex.begin(200);
  h.header("Content-Type", "application/x-ndjson");
  h.header("Cache-Control", "no-store");
  ex.start_stream();
  Watch* raw = w.get();
  watches_.push_back(std::move(w));
  if (!push(*raw)) {
    watches_.pop_back();
    return true;
  }
  raw->timer = uv::make_timer(loop_, [this, raw] {
    if (push(*raw)) {
      arm(*raw);
      return;
    }
    std::erase_if(watches_, [raw](const auto& p) { return p.get() == raw; });
  });
  raw->every = *interval;
  raw->next_at = uv_now(loop_);
  arm(*raw);
  return true;
}

// Each document at its own time from the start of the stream: a repeating
// timer counts from when it last ran, so a busy loop would stretch the period.
void StatusWatches::arm(Watch& w) {
  w.next_at += w.every;
  const uint64_t now = uv_now(loop_);
  // Behind by more than a period (the loop was held up): no burst to catch up.
  if (w.next_at + w.every < now) w.next_at = now;
  uv::timer_start(w.timer.get(), w.next_at > now ? w.next_at - now : 0, 0);
}

bool StatusWatches::push(Watch& w) {
  net::Exchange* ex = w.answer.exchange();
  if (ex == nullptr) return false;  // the watcher went away
  std::string doc = document_();
  doc.push_back('\n');
  const bool sent = ex->send_piece(doc);
  if (!sent || --w.left == 0 || ending_) {
    // A watcher that does not read gets the end (it will see a stale
    // stream and poll again); a finished one asks for the next.
    ex->end_stream();
    return false;
  }
  return true;
}

void StatusWatches::end_all() {
  ending_ = true;
  auto watches = std::move(watches_);
  watches_.clear();
  for (auto& w : watches) push(*w);
}

}  // namespace cdn::daemon
