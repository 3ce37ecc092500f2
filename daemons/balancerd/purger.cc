// SPDX-License-Identifier: MIT
#include "daemons/balancerd/purger.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/purge/purge.hpp"

namespace cdn::balancer {

namespace {

using Json = nlohmann::json;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
      .count();
}

// "127.0.0.1:33000" / "[::1]:33000" -> an address (numeric: never a lookup).
std::optional<net::Address> address_of(const std::string& resolved) {
  const size_t colon = resolved.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  std::string host = resolved.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  unsigned port = 0;
  for (char c : resolved.substr(colon + 1)) {
    if (c < '0' || c > '9' || port > 65535) return std::nullopt;
    port = port * 10 + static_cast<unsigned>(c - '0');
  }
  if (port == 0 || port > 65535) return std::nullopt;
  return net::resolve(host, static_cast<uint16_t>(port));
}

// A ledger file larger than this is not one of ours (1024 purges owed per
// replica, each a line of at most a few KiB).
constexpr off_t kMaxStateBytes = 64 << 20;

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// temp + fsync + rename + fsync of the directory: after a crash the file
// is the old ledger or the new one, never a mix.
bool write_atomically(const std::string& path, std::string_view text, std::string& error) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = errno_text(tmp);
    return false;
  }
  const bool ok = write_all(fd, text) && ::fsync(fd) == 0;
  if (!ok) error = errno_text(tmp);
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) error = errno_text(path);
    ::unlink(tmp.c_str());
    return false;
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return true;
}

// The file's text; nullopt with `error` unless it is absent (no error).
std::optional<std::string> read_state(const std::string& path, std::string& error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT) error = errno_text(path);
    return std::nullopt;
  }
  std::string text;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > kMaxStateBytes) {
    error = path + ": not a regular file of at most 64 MiB";
    ::close(fd);
    return std::nullopt;
  }
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) error = errno_text(path);
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > static_cast<size_t>(kMaxStateBytes)) {
      error = path + ": larger than 64 MiB";
      break;
    }
  }
  ::close(fd);
  if (!error.empty()) return std::nullopt;
  return text;
}

}  // namespace

void Purger::use_state_file(std::string path) {
  const bool first = !state_read_;
  state_read_ = true;
  state_file_ = std::move(path);
  if (state_file_.empty()) return;
  if (!first) {
    save();
    return;
  }
  std::string error;
  const auto text = read_state(state_file_, error);
  if (text) {
    if (auto ledger = purge::Ledger::load(*text, error)) {
      ledger_ = std::move(*ledger);
      spdlog::info("purge ledger {}: {} purges owed by {} replicas", state_file_,
                   ledger_.owed_total(), ledger_.replicas_owing());
      return;
    }
  }
  if (!error.empty()) {
    spdlog::error("purge ledger {} ignored (starting with none owed): {}", state_file_, error);
  }
}

void Purger::save() {
  dirty_ = false;
  if (state_file_.empty()) return;
  std::string error;
  if (!write_atomically(state_file_, ledger_.save(), error)) {
    // Kept in memory still; a restart before the next good write would
    // forget what is owed. Once per failure: purges are rare.
    spdlog::error("purge ledger not saved: {}", error);
  }
}

void Purger::start() {
  if (timer_) return;
  timer_ = uv::make_timer(loop_, [this] { retry(); });
  const auto every = static_cast<uint64_t>(kPurgeRetryEvery.count());
  uv::timer_start(timer_.get(), every, every);
}

void Purger::stop() {
  if (dirty_) save();
  timer_.reset();
  channels_.clear();
  for (auto& w : waiters_) {
    w.answer({503, {{"Content-Type", "text/plain; charset=utf-8"}}, "the balancer is stopping\n"});
  }
  waiters_.clear();
}

std::vector<std::string> Purger::names(const std::vector<char>* only) const {
  std::vector<std::string> out;
  const auto& rs = table_.replicas();
  for (size_t i = 0; i < rs.size(); ++i) {
    if (rs[i].same_as) continue;
    if (only != nullptr && (i >= only->size() || (*only)[i] == 0)) continue;
    out.push_back(rs[i].address.str());
  }
  return out;
}

std::optional<size_t> Purger::index_of(const std::string& name) const {
  const auto& rs = table_.replicas();
  for (size_t i = 0; i < rs.size(); ++i) {
    if (!rs[i].same_as && rs[i].address.str() == name) return i;
  }
  return std::nullopt;
}

void Purger::reconfigured() {
  const auto all = names();
  const size_t owed = ledger_.owed_total();
  ledger_.keep_only(all);
  if (ledger_.owed_total() != owed) dirty_ = true;
  for (auto it = channels_.begin(); it != channels_.end();) {
    it = std::find(all.begin(), all.end(), it->first) == all.end() ? channels_.erase(it)
                                                                   : std::next(it);
  }
  const auto now = Clock::now();
  for (size_t i = 0; i < table_.replicas().size(); ++i) {
    table_.set_held(i, ledger_.owes(table_.replicas()[i].address.str()), now);
  }
}

void Purger::purge(purge::Request r, const std::string& token, daemon::Answer answer,
                   const std::vector<char>* only) {
  token_ = token;
  ++purges_total_;
  const auto all = names(only);
  const std::string description = purge::describe(r);
  const uint64_t id = ledger_.add(std::move(r), all, now_ms());
  // On disk before any replica is sent it: what it reports done stays owed
  // by replicas that miss it, across a restart too.
  save();
  Waiter& w = waiters_.emplace_back(Waiter{id, std::move(answer), description, {}, all.size()});
  for (const auto& name : all) {
    Part p;
    p.replica = name;
    w.parts.push_back(std::move(p));
  }
  spdlog::info("purge {} ({}): sent to {} replicas", id, description, all.size());
  if (all.empty()) {
    finish(w);
    waiters_.pop_back();
    return;
  }
  for (const auto& name : all) pump(name);
}

void Purger::pump(const std::string& name) {
  const auto owed = ledger_.owed(name);
  if (owed.empty()) return;
  Channel& ch = channels_[name];
  if (ch.busy) return;
  const auto i = index_of(name);
  const purge::Ledger::Entry& e = *owed.front();
  const uint64_t id = e.id;
  const std::string resolved = i ? table_.replicas()[*i].resolved : std::string();
  std::optional<net::Address> addr;
  if (!resolved.empty()) addr = address_of(resolved);
  if (!addr) {
    answered(name, id, false, 0, "its address is not known yet", "");
    return;
  }
  if (!ch.conn || ch.resolved != resolved) {
    ch.conn = net::ClientConnection::create(loop_, *addr);
    ch.resolved = resolved;
  }
  ch.busy = true;
  ++forwarded_total_;
  std::string headers = purge::wire_headers(e.request);
  headers.append("Authorization: Bearer ").append(token_).append("\r\n");
  auto body = std::make_shared<std::string>();
  // The Host the client sent (the site, once replicas serve several), else
  // the replica's own address.
  const std::string host = e.request.site.empty() ? name : e.request.site;
  ch.conn->request(
      "PURGE", purge::wire_target(e.request), host, headers, kPurgeTimeout,
      {.on_headers = nullptr,
       .on_body =
           [body](std::string_view piece) {
             if (body->size() < 64 * 1024) body->append(piece);
             return true;
           },
       .on_done =
           [this, name, id, body](const net::ClientResult& res, const http::Response& resp) {
             auto it = channels_.find(name);
             if (it != channels_.end()) it->second.busy = false;
             if (!res.ok()) {
               answered(name, id, false, 0, res.message, "");
             } else {
               // 421: the replica serves no site of this Host (any more), so
               // it holds none of its objects: nothing it could serve stale.
               const bool ok = resp.status == 200 || resp.status == 421;
               answered(name, id, ok, resp.status,
                        ok ? "" : "answered " + std::to_string(resp.status), *body);
             }
           }});
}

void Purger::answered(const std::string& name, uint64_t id, bool ok, int status, std::string error,
                      const std::string& body) {
  const auto i = index_of(name);
  const auto now = Clock::now();
  if (ok) {
    ledger_.ack(name, id);
    dirty_ = true;
    for (auto& w : waiters_) settle(w, name, id, true, status, error, body);
    if (!ledger_.owes(name)) {
      if (i) table_.set_held(*i, false, now);
    } else {
      pump(name);
    }
  } else {
    ++forward_failures_total_;
    // Every purge it owes stays owed; those clients hear it now.
    if (i) table_.set_held(*i, true, now);
    const auto owed = ledger_.owed(name);
    for (const auto* e : owed) {
      for (auto& w : waiters_) settle(w, name, e->id, false, status, error, body);
    }
    spdlog::warn("purge {}: replica {} did not take it ({}); held until it does", id, name, error);
  }
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    if (it->left == 0) {
      finish(*it);
      it = waiters_.erase(it);
    } else {
      ++it;
    }
  }
}

void Purger::settle(Waiter& w, const std::string& name, uint64_t id, bool ok, int status,
                    const std::string& error, const std::string& body) {
  if (w.id != id) return;
  for (auto& p : w.parts) {
    if (p.replica != name || p.done) continue;
    p.done = true;
    p.acknowledged = ok;
    p.status = status;
    p.error = error;
    p.answer = body;
    --w.left;
  }
}

void Purger::finish(Waiter& w) {
  Json doc;
  doc["id"] = w.id;
  doc["purge"] = w.description;
  size_t acked = 0;
  Json list = Json::array();
  for (const auto& p : w.parts) {
    Json j;
    j["replica"] = p.replica;
    j["acknowledged"] = p.acknowledged;
    if (p.acknowledged) {
      ++acked;
      Json answer = Json::parse(p.answer, nullptr, false);
      j["purged"] = answer.is_object() && answer.contains("purged") ? answer["purged"] : Json(0);
    } else {
      j["status"] = p.status;
      j["error"] = p.error;
      j["owed"] = true;  // sent again until it acknowledges; no client goes there meanwhile
    }
    list.push_back(std::move(j));
  }
  doc["replicas"] = std::move(list);
  doc["acknowledged"] = acked;
  doc["owed"] = w.parts.size() - acked;
  w.answer({acked == w.parts.size() ? 200 : 202,
            {{"Content-Type", "application/json"}, {"Cache-Control", "no-store"}},
            doc.dump() + "\n"});
}

void Purger::retry() {
  if (dirty_) save();
  if (ledger_.replicas_owing() == 0) return;
  // Held already (since the send that failed): not held here, so that a
  // replica whose first send is merely in flight keeps its clients.
  for (const auto& r : table_.replicas()) {
    if (!r.same_as && ledger_.owes(r.address.str())) pump(r.address.str());
  }
}

}  // namespace cdn::balancer
