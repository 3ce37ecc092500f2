// SPDX-License-Identifier: MIT
// Ownership of libuv handles (after uvw's uv_type/handle and Node's
// HandleWrap::OnClose): a handle lives in a heap object that never moves;
// close() hands that object to uv_close, and the close callback frees it.
// Nothing is freed while libuv may still touch it, and close() twice is harmless.
// This is the one idiom for every handle type the project uses (tcp, poll,
// timer, signal, idle, async, prepare, check).
//
// Callbacks run behind noexcept trampolines: libuv is C, and an exception
// unwinding through its frames is undefined behaviour. guarded() catches it
// at the boundary and logs it; the handle stays open, its owner decides.
#pragma once

#include <uv.h>

#include <exception>
#include <functional>
#include <memory>
#include <utility>

namespace cdn::uv {

namespace detail {
// Logs an exception that reached a libuv callback (handle.cc).
void report_exception(const char* where, const char* what) noexcept;
}  // namespace detail

// Runs f; an exception is logged and swallowed, never passed to libuv.
// False when one was: the caller closes what it was working on.
template <typename F>
bool guarded(const char* where, F&& f) noexcept {
  try {
    std::forward<F>(f)();
    return true;
  } catch (const std::exception& e) {
    detail::report_exception(where, e.what());
  } catch (...) {
    detail::report_exception(where, "unknown exception");
  }
  return false;
}

// A heap-held libuv handle of type T (uv_timer_t, uv_signal_t, uv_tcp_t, ...).
// raw.data always points at it; a Handle's callbacks reach their owner
// through `owner`.
// close_handle() hands it to uv_close, and the close callback runs closed()
// and deletes it. An owner that lives exactly as long as its one handle may
// be that heap object itself: it derives from HandleBase<T> (one allocation
// for both, e.g. a connection's TCP transport), overrides closed(), is made
// with init_tcp() and closed with close_handle().
template <typename T>
struct HandleBase {
  HandleBase() = default;
  HandleBase(const HandleBase&) = delete;
  HandleBase& operator=(const HandleBase&) = delete;
  virtual ~HandleBase() = default;
  T raw{};
  // Runs in the close callback, just before the handle is freed: an owner
  // that must outlive libuv's last use of the handle (a connection whose
  // write callbacks run before the close callback) frees itself here.
  virtual void closed() noexcept {}

  uv_handle_t* base() { return reinterpret_cast<uv_handle_t*>(&raw); }
  static HandleBase* from(T* h) { return static_cast<HandleBase*>(h->data); }
  static HandleBase* from(uv_handle_t* h) { return static_cast<HandleBase*>(h->data); }
};

// The handle `Ptr` below owns, with std::function callbacks. Each is 32
// bytes, so an owner derived from HandleBase (one per connection) does not
// carry them, nor `owner` (it is its own).
template <typename T>
struct Handle final : HandleBase<T> {
  void* owner = nullptr;
  std::function<void()> on_event;  // timers, signals, idle, async, prepare, check
  std::function<void(int status, int events)> on_poll;  // poll handles
  // Runs in the close callback (a poll handle closes the descriptor it watched).
  std::function<void()> on_closed;

  void closed() noexcept override {
    if (on_closed) guarded("close", [this] { on_closed(); });
  }
  static Handle* from(T* h) { return static_cast<Handle*>(HandleBase<T>::from(h)); }
  static Handle* from(uv_handle_t* h) { return static_cast<Handle*>(HandleBase<T>::from(h)); }
  template <typename O>
  static O* owner_of(T* h) {
    return static_cast<O*>(from(h)->owner);
  }
};

template <typename T>
void close_handle(HandleBase<T>* h) {
  if (h == nullptr) return;
  if (uv_is_closing(h->base())) return;
  uv_close(h->base(), [](uv_handle_t* raw) noexcept {
    auto* hh = static_cast<HandleBase<T>*>(raw->data);
    hh->closed();
    delete hh;
  });
}

template <typename T>
struct Closer {
  void operator()(Handle<T>* h) const { close_handle(h); }
};

template <typename T>
using Ptr = std::unique_ptr<Handle<T>, Closer<T>>;

// Closes the handle (if any) and forgets it; the close callback frees it on a
// later loop turn, so this is safe from inside the handle's own callback.
template <typename T>
void close(Ptr<T>& p) {
  p.reset();
}

namespace detail {
// Wraps a freshly allocated handle once init succeeded; on failure the
// handle was never registered with the loop, so it is deleted directly.
template <typename T>
Ptr<T> adopt(Handle<T>* h, int rc, int* err) {
  if (err != nullptr) *err = rc;
  if (rc != 0) {
    delete h;
    return Ptr<T>();
  }
  h->raw.data = static_cast<HandleBase<T>*>(h);
  return Ptr<T>(h);
}

template <typename T>
void fire(T* raw, const char* where) noexcept {
  guarded(where, [raw] {
    auto* h = Handle<T>::from(raw);
    if (h->on_event) h->on_event();
  });
}
}  // namespace detail

// Timer with a std::function callback.
inline Ptr<uv_timer_t> make_timer(uv_loop_t* loop, std::function<void()> cb) {
  auto* h = new Handle<uv_timer_t>();
  h->on_event = std::move(cb);
  return detail::adopt(h, uv_timer_init(loop, &h->raw), nullptr);
}

inline void timer_start(Handle<uv_timer_t>* h, uint64_t timeout_ms, uint64_t repeat_ms) {
  uv_timer_start(
      &h->raw, [](uv_timer_t* t) noexcept { detail::fire(t, "timer"); }, timeout_ms, repeat_ms);
}

// Signal watcher with a std::function callback.
inline Ptr<uv_signal_t> make_signal(uv_loop_t* loop, int signum, std::function<void()> cb) {
  auto* h = new Handle<uv_signal_t>();
  h->on_event = std::move(cb);
  auto p = detail::adopt(h, uv_signal_init(loop, &h->raw), nullptr);
  if (p)
    uv_signal_start(
        &p->raw, [](uv_signal_t* s, int) noexcept { detail::fire(s, "signal"); }, signum);
  return p;
}

// Idle, prepare and check watchers, started at once with cb; stop them with
// uv_<type>_stop(&h->raw) and start again with the matching *_start below.
inline Ptr<uv_idle_t> make_idle(uv_loop_t* loop, std::function<void()> cb) {
  auto* h = new Handle<uv_idle_t>();
  h->on_event = std::move(cb);
  return detail::adopt(h, uv_idle_init(loop, &h->raw), nullptr);
}
inline void idle_start(Handle<uv_idle_t>* h) {
  uv_idle_start(&h->raw, [](uv_idle_t* i) noexcept { detail::fire(i, "idle"); });
}

inline Ptr<uv_prepare_t> make_prepare(uv_loop_t* loop, std::function<void()> cb) {
  auto* h = new Handle<uv_prepare_t>();
  h->on_event = std::move(cb);
  return detail::adopt(h, uv_prepare_init(loop, &h->raw), nullptr);
}
inline void prepare_start(Handle<uv_prepare_t>* h) {
  uv_prepare_start(&h->raw, [](uv_prepare_t* p) noexcept { detail::fire(p, "prepare"); });
}

inline Ptr<uv_check_t> make_check(uv_loop_t* loop, std::function<void()> cb) {
  auto* h = new Handle<uv_check_t>();
  h->on_event = std::move(cb);
  return detail::adopt(h, uv_check_init(loop, &h->raw), nullptr);
}
inline void check_start(Handle<uv_check_t>* h) {
  uv_check_start(&h->raw, [](uv_check_t* c) noexcept { detail::fire(c, "check"); });
}

// Async wake-up: uv_async_send(&h->raw) from any thread runs cb on the loop.
inline Ptr<uv_async_t> make_async(uv_loop_t* loop, std::function<void()> cb, int* err = nullptr) {
  auto* h = new Handle<uv_async_t>();
  h->on_event = std::move(cb);
  return detail::adopt(
      h, uv_async_init(loop, &h->raw, [](uv_async_t* a) noexcept { detail::fire(a, "async"); }),
      err);
}

// Poll watcher on a socket; cb(status, events). Null on failure (*err says why).
inline Ptr<uv_poll_t> make_poll(uv_loop_t* loop, uv_os_sock_t sock,
                                std::function<void(int, int)> cb, int* err = nullptr) {
  auto* h = new Handle<uv_poll_t>();
  h->on_poll = std::move(cb);
  return detail::adopt(h, uv_poll_init_socket(loop, &h->raw, sock), err);
}
inline int poll_start(Handle<uv_poll_t>* h, int events) {
  return uv_poll_start(&h->raw, events, [](uv_poll_t* p, int status, int ev) noexcept {
    guarded("poll", [&] {
      auto* hh = Handle<uv_poll_t>::from(p);
      if (hh->on_poll) hh->on_poll(status, ev);
    });
  });
}

// TCP handle. Stream callbacks are the hot path and stay raw function
// pointers set by the owner (wrap their bodies in guarded()); reach the
// owner with Handle<uv_tcp_t>::owner_of<O>(tcp).
inline Ptr<uv_tcp_t> make_tcp(uv_loop_t* loop, void* owner, int* err = nullptr) {
  auto* h = new Handle<uv_tcp_t>();
  h->owner = owner;
  return detail::adopt(h, uv_tcp_init(loop, &h->raw), err);
}
// The same for an owner derived from HandleBase<uv_tcp_t>: 0 or a libuv
// error, in which case the handle was never registered and the caller
// deletes it.
inline int init_tcp(uv_loop_t* loop, HandleBase<uv_tcp_t>* h) {
  h->raw.data = h;
  return uv_tcp_init(loop, &h->raw);
}
inline uv_stream_t* stream(HandleBase<uv_tcp_t>* h) {
  return reinterpret_cast<uv_stream_t*>(&h->raw);
}

// Shutdown: close every handle still open and run the loop until their close
// callbacks have freed them, then close the loop (uv_loop_close fails while
// any handle remains).
inline int close_loop(uv_loop_t* loop) {
  uv_walk(
      loop,
      [](uv_handle_t* h, void*) noexcept {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      },
      nullptr);
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop);
}

}  // namespace cdn::uv
