// SPDX-License-Identifier: MIT
// The handle idiom: close frees on a later loop turn, close twice and close
// from inside the handle's own callback are harmless, and an exception in a
// callback stops at the trampoline instead of unwinding through libuv.
#include <gtest/gtest.h>
#include <uv.h>

#include <stdexcept>

#include "common/uv/handle.hpp"

namespace cdn::uv {
namespace {

struct Loop {
  uv_loop_t loop{};
  Loop() { uv_loop_init(&loop); }
  ~Loop() { EXPECT_EQ(close_loop(&loop), 0); }
};

TEST(UvHandle, ExceptionInTimerCallbackIsCaughtAndLoopGoesOn) {
  Loop l;
  int fired = 0;
  auto t = make_timer(&l.loop, [&] {
    ++fired;
    throw std::runtime_error("boom");
  });
  timer_start(t.get(), 0, 0);
  uv_run(&l.loop, UV_RUN_DEFAULT);
  EXPECT_EQ(fired, 1);
}

TEST(UvHandle, CloseFromInsideOwnCallbackAndTwice) {
  Loop l;
  int fired = 0;
  Ptr<uv_timer_t> t;
  t = make_timer(&l.loop, [&] {
    ++fired;
    close(t);  // the running std::function lives until the close callback
    close(t);
  });
  timer_start(t.get(), 0, 5);
  uv_run(&l.loop, UV_RUN_DEFAULT);  // returns: the closed timer no longer holds the loop
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(t, nullptr);
}

TEST(UvHandle, AsyncIdleCheckPrepareRunTheirCallbacks) {
  Loop l;
  int async_n = 0, idle_n = 0, prep_n = 0, check_n = 0;
  Ptr<uv_idle_t> idle;
  Ptr<uv_prepare_t> prep;
  Ptr<uv_check_t> check;
  auto async = make_async(&l.loop, [&] {
    ++async_n;
    throw 42;  // not a std::exception: still stops at the trampoline
  });
  ASSERT_TRUE(async);
  idle = make_idle(&l.loop, [&] {
    ++idle_n;
    close(idle);
  });
  prep = make_prepare(&l.loop, [&] {
    ++prep_n;
    close(prep);
  });
  check = make_check(&l.loop, [&] {
    ++check_n;
    close(check);
    close(async);
  });
  idle_start(idle.get());
  prepare_start(prep.get());
  check_start(check.get());
  uv_async_send(&async->raw);
  uv_run(&l.loop, UV_RUN_DEFAULT);
  EXPECT_EQ(idle_n, 1);
  EXPECT_EQ(prep_n, 1);
  EXPECT_EQ(check_n, 1);
  EXPECT_LE(async_n, 1);
}

TEST(UvHandle, PollOnBadSocketFailsWithoutLeaking) {
  Loop l;
  int err = 0;
  auto p = make_poll(
      &l.loop, -1, [](int, int) {}, &err);
  EXPECT_EQ(p, nullptr);
  EXPECT_NE(err, 0);
}

TEST(UvHandle, TcpHandleReachesItsOwner) {
  Loop l;
  int owner = 7;
  auto t = make_tcp(&l.loop, &owner);
  ASSERT_TRUE(t);
  EXPECT_EQ(Handle<uv_tcp_t>::owner_of<int>(&t->raw), &owner);
  close(t);
  close(t);
}

}  // namespace
}  // namespace cdn::uv
