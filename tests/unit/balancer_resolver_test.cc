// SPDX-License-Identifier: MIT
#include "daemons/balancerd/resolver.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace cdn::balancer {
namespace {

std::string literal(std::string_view host, uint16_t port = 80) {
  const auto a = ip_literal(host, port);
  return a ? a->str() : "none";
}

TEST(IpLiteral, ReadsAddressesAsGetaddrinfoDoes) {
  EXPECT_EQ(literal("127.0.0.1", 33000), "127.0.0.1:33000");
  EXPECT_EQ(literal("127.000.000.001"), "127.0.0.1:80");
  EXPECT_EQ(literal("127.1"), "127.0.0.1:80");
  EXPECT_EQ(literal("::1"), "[::1]:80");
  EXPECT_EQ(literal("[::1]"), "[::1]:80");
  EXPECT_EQ(literal("[2001:db8::1]", 8080), "[2001:db8::1]:8080");
}

TEST(IpLiteral, NamesAreNot) {
  for (const char* host : {"localhost", "replica-1.example", "", "[]", "127.0.0.1.example",
                           "127.0.0.1 x", "1.2.3.4.5", "[localhost]"}) {
    EXPECT_EQ(literal(host), "none") << host;
  }
}

// A loop and a resolver: lookups answer on the loop's thread.
struct Answers {
  std::vector<std::string> hosts;
  std::vector<std::optional<net::Address>> addresses;
  std::vector<std::string> errors;
};

TEST(Resolver, AnswersOnTheLoopAndCoalescesAHost) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  Answers got;
  {
    Resolver r(&loop, 2,
               [&](const std::string& host, std::optional<net::Address> a, const std::string& e) {
                 got.hosts.push_back(host);
                 got.addresses.push_back(a);
                 got.errors.push_back(e);
               });
    r.lookup("localhost");
    r.lookup("localhost");  // one lookup in flight for a host
    r.lookup("bad..name");
    EXPECT_EQ(r.pending(), 2u);
    // The async handle does not keep the loop alive (a daemon's listener
    // does): a timer does here, until the answers came.
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    tick.data = &got;
    uv_timer_start(
        &tick,
        [](uv_timer_t* t) {
          if (static_cast<Answers*>(t->data)->hosts.size() >= 2) uv_timer_stop(t);
        },
        1, 1);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (got.hosts.size() < 2 && std::chrono::steady_clock::now() < until) {
      uv_run(&loop, UV_RUN_ONCE);
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    ASSERT_EQ(got.hosts.size(), 2u);
    EXPECT_EQ(r.pending(), 0u);
    for (size_t i = 0; i < 2; ++i) {
      if (got.hosts[i] == "localhost") {
        ASSERT_TRUE(got.addresses[i]);
        EXPECT_EQ(got.addresses[i]->port(), 0);
      } else {
        EXPECT_EQ(got.hosts[i], "bad..name");
        EXPECT_FALSE(got.addresses[i]);
        EXPECT_NE(got.errors[i].find("bad..name"), std::string::npos) << got.errors[i];
      }
    }
    r.close();
    r.close();              // twice is harmless
    r.lookup("localhost");  // after close: nothing
    EXPECT_EQ(r.pending(), 0u);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
}  // namespace cdn::balancer
