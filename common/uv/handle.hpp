// Ownership of libuv handles (after uvw's uv_type/handle and Node's
// HandleWrap::OnClose): a handle lives in a heap object that never moves;
// close() hands that object to uv_close, and the close callback frees it.
// Nothing is freed while libuv may still touch it, and close() twice is harmless.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <utility>

namespace cdn::uv {

// A heap-held libuv handle of type T (uv_timer_t, uv_signal_t, uv_tcp_t, ...).
// `Ptr` below owns it: destroying the Ptr closes the handle, and the close
// callback deletes it. Callbacks reach their owner through `owner`.
template <typename T>
struct Handle {
  T raw{};
  void* owner = nullptr;
  std::function<void()> on_event;  // for timers, signals, async: not the hot path

  uv_handle_t* base() { return reinterpret_cast<uv_handle_t*>(&raw); }
  static Handle* from(T* h) { return static_cast<Handle*>(h->data); }
};

template <typename T>
void close_handle(Handle<T>* h) {
  if (h == nullptr) return;
  if (uv_is_closing(h->base())) return;
  uv_close(h->base(), [](uv_handle_t* raw) { delete static_cast<Handle<T>*>(raw->data); });
}

template <typename T>
struct Closer {
  void operator()(Handle<T>* h) const { close_handle(h); }
};

template <typename T>
using Ptr = std::unique_ptr<Handle<T>, Closer<T>>;

// Timer with a std::function callback.
inline Ptr<uv_timer_t> make_timer(uv_loop_t* loop, std::function<void()> cb) {
  auto* h = new Handle<uv_timer_t>();
  uv_timer_init(loop, &h->raw);
  h->raw.data = h;
  h->on_event = std::move(cb);
  return Ptr<uv_timer_t>(h);
}

inline void timer_start(Handle<uv_timer_t>* h, uint64_t timeout_ms, uint64_t repeat_ms) {
  uv_timer_start(
      &h->raw, [](uv_timer_t* t) { Handle<uv_timer_t>::from(t)->on_event(); }, timeout_ms,
      repeat_ms);
}

// Signal watcher with a std::function callback.
inline Ptr<uv_signal_t> make_signal(uv_loop_t* loop, int signum, std::function<void()> cb) {
  auto* h = new Handle<uv_signal_t>();
  uv_signal_init(loop, &h->raw);
  h->raw.data = h;
  h->on_event = std::move(cb);
  uv_signal_start(
      &h->raw, [](uv_signal_t* s, int) { Handle<uv_signal_t>::from(s)->on_event(); }, signum);
  return Ptr<uv_signal_t>(h);
}

// Shutdown: close every handle still open and run the loop until their close
// callbacks have freed them, then close the loop (uv_loop_close fails while
// any handle remains).
inline int close_loop(uv_loop_t* loop) {
  uv_walk(
      loop,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      },
      nullptr);
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop);
}

}  // namespace cdn::uv
