// SPDX-License-Identifier: MIT
#include "daemons/balancerd/resolver.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <vector>

namespace cdn::balancer {

std::optional<net::Address> ip_literal(std::string_view host, uint16_t port) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || host.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  const std::string h(host);
  net::Address a;
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  if (inet_pton(AF_INET6, h.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    return a;
  }
  // inet_aton stops at white space; a host name holds none, but be exact.
  if (h.find_first_of(" \t\r\n") != std::string::npos) return std::nullopt;
  auto* in = reinterpret_cast<sockaddr_in*>(&a.storage);
  if (inet_aton(h.c_str(), &in->sin_addr) != 0) {
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    return a;
  }
  return std::nullopt;
}

struct Resolver::Shared {
  struct Answer {
    std::string host;
    std::optional<net::Address> address;
    std::string error;
  };
  std::mutex mu;
  std::condition_variable wake;
  bool closed = false;
  size_t max_threads = 1;
  size_t threads = 0;
  size_t idle = 0;
  std::deque<std::string> queue;
  std::set<std::string> pending;  // queued or running
  std::vector<Answer> answers;
  uv_async_t* async = nullptr;  // valid while !closed

  // A worker: takes hosts until closed. Signals stay with the loop's thread.
  static void work(const std::shared_ptr<Shared>& s) {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    std::unique_lock lock(s->mu);
    while (true) {
      ++s->idle;
      s->wake.wait(lock, [&] { return s->closed || !s->queue.empty(); });
      --s->idle;
      if (s->closed) break;
      std::string host = std::move(s->queue.front());
      s->queue.pop_front();
      lock.unlock();
      Answer a;
      a.address = net::resolve(host, 0, &a.error);
      a.host = std::move(host);
      lock.lock();
      if (s->closed) break;
      s->answers.push_back(std::move(a));
      uv_async_send(s->async);
    }
    --s->threads;
  }
};

Resolver::Resolver(uv_loop_t* loop, size_t threads, Done done)
    : shared_(std::make_shared<Shared>()), done_(std::move(done)) {
  shared_->max_threads = std::max<size_t>(1, threads);
  int rc = 0;
  async_ = uv::make_async(
      loop, [this] { deliver(); }, &rc);
  if (!async_) {
    // Out of descriptors (eventfd): no answer could come back; names stay
    // unresolved rather than the reload failing.
    spdlog::error("resolver: cannot start: {}", uv_strerror(rc));
    shared_->closed = true;
    return;
  }
  // Waiting for an answer is no reason to keep the loop running.
  uv_unref(async_->base());
  shared_->async = &async_->raw;
}

Resolver::~Resolver() { close(); }

void Resolver::close() {
  {
    std::lock_guard lock(shared_->mu);
    if (shared_->closed) return;
    shared_->closed = true;
    shared_->async = nullptr;
    shared_->queue.clear();
  }
  shared_->wake.notify_all();
  async_.reset();
}

void Resolver::lookup(const std::string& host) {
  bool spawn = false;
  {
    std::lock_guard lock(shared_->mu);
    if (shared_->closed || !shared_->pending.insert(host).second) return;
    shared_->queue.push_back(host);
    if (shared_->idle == 0 && shared_->threads < shared_->max_threads) {
      ++shared_->threads;
      spawn = true;
    }
  }
  if (spawn) {
    try {
      std::thread([s = shared_] { Shared::work(s); }).detach();
    } catch (const std::system_error& e) {
      // Out of threads: the lookup waits for a running one, or for the next
      // lookup to try again.
      spdlog::warn("resolver: cannot start a thread: {}", e.what());
      std::lock_guard lock(shared_->mu);
      --shared_->threads;
    }
  } else {
    shared_->wake.notify_one();
  }
}

size_t Resolver::pending() const {
  std::lock_guard lock(shared_->mu);
  return shared_->pending.size();
}

void Resolver::deliver() {
  std::vector<Shared::Answer> answers;
  {
    std::lock_guard lock(shared_->mu);
    answers.swap(shared_->answers);
    for (const auto& a : answers) shared_->pending.erase(a.host);
  }
  for (const auto& a : answers) {
    done_(a.host, a.address, a.error);
    if (shared_->closed) return;  // done_ may close the resolver
  }
}

}  // namespace cdn::balancer
