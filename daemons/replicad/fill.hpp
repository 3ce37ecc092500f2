// SPDX-License-Identifier: MIT
// Read-while-writer: the progress of one origin fill (a body being written
// to the disk cache's temp file), shared by the fetch that writes it and the
// clients that stream it from the same file as it grows.
//
// Glossary and ownership:
// - FillProgress: held by shared_ptr by the fetch (the only writer: one
//   thread, the Pull's loop) and by every streaming client, which may live
//   on another worker's loop. Thread-safe: a mutex around a few integers.
// - Subscriber: a client's wake function. It is called (on the writer's
//   thread, outside the lock) when there is news since the subscriber last
//   took the state with take(), and then not again until it takes it anew:
//   one wake per pump, not one per origin chunk, and none at all for a
//   client that is not ready for more (it takes the state only once its
//   connection can send). The wake posts to the subscriber's own loop
//   (daemon::Inbox); it must not call back into this object. Once the fill
//   is done or failed, the wakes are dropped (after a last one), so that no
//   ownership cycle through them outlives the fill.
// Pure: no I/O, no clock (times are given by the caller).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace cdn::replica {

class FillProgress {
 public:
  enum class State : uint8_t { Filling, Done, Failed };
  struct View {
    uint64_t available = 0;  // bytes written to the file so far
    State state = State::Filling;
    std::optional<uint64_t> length;  // the origin's Content-Length, when it sent one
    int64_t last_progress_ms = 0;    // when bytes last came (the caller's clock)
    // Bytes from here on are not in the file but in memory chunks (the
    // disk failed mid-body: see spill()).
    uint64_t file_end = UINT64_MAX;
  };
  using Wake = std::function<void()>;

  FillProgress(std::optional<uint64_t> length, int64_t now_ms);

  // The writer's side. advance(): `available` bytes are in the file now.
  // finish(): the body is whole and checked (digest). fail(): it will never
  // be whole (the origin broke off, the disk failed, the fetch was dropped).
  // After finish() or fail(), every call but view() does nothing.
  void advance(uint64_t available, int64_t now_ms);
  // The disk failed: the file holds the body up to `file_end`; what follows
  // comes with spilled() (the writer's spill to memory, bounded by its
  // spill_limit), once per fill, not per client.
  void spill(uint64_t file_end);
  void spilled(std::string_view bytes);
  // From now on at most about `bytes` of spilled chunks are kept: the
  // oldest go as new ones come (a fill passed through to its streaming
  // clients, held neither on disk nor whole in memory). A client that far
  // behind the origin finds its bytes gone and is cut (FillStep::Cut via
  // memory_at), never sent a short body as whole.
  void window(uint64_t bytes);
  // The memory chunk holding byte `offset` (past file_end), and where in it
  // that byte is; null when there is none.
  std::pair<std::shared_ptr<const std::string>, size_t> memory_at(uint64_t offset) const;
  void finish();
  void fail();

  // The readers' side (any thread). subscribe() arms the wake at once.
  uint64_t subscribe(Wake wake);
  // The state now; arms the subscriber's wake again.
  View take(uint64_t id);
  void unsubscribe(uint64_t id);
  View view() const;
  size_t subscribers() const;

 private:
  // Takes the armed wakes out (to be called outside the lock); at the end,
  // every wake is dropped.
  std::vector<Wake> news_locked(bool end);
  void wake_all(const std::vector<Wake>& wakes);
  void trim_locked();  // memory_ within window_
  void end(State state);

  struct Sub {
    Wake wake;
    bool armed = true;
  };
  mutable std::mutex mu_;
  View v_;
  uint64_t next_id_ = 0;
  std::unordered_map<uint64_t, Sub> subs_;
  uint64_t memory_end_ = 0;  // one past the last spilled byte
  // (offset, bytes). The last chunk grows until a reader is handed it (up
  // to kChunk): a client is sent a chunk per turn, and the origin's pieces
  // are small. A chunk a reader was handed never changes again.
  std::deque<std::pair<uint64_t, std::shared_ptr<std::string>>> memory_;
  mutable bool newest_handed_ = false;  // memory_at() gave out memory_.back()
  uint64_t memory_held_ = 0;            // bytes in memory_
  uint64_t window_ = UINT64_MAX;        // see window()
};

// What a streaming client does next, from the fill's state, the next byte
// it is to send and the end of what it wants (one past its last byte;
// nullopt: to the end of the body).
struct FillStep {
  enum class Kind : uint8_t {
    Wait,        // nothing new to send yet
    Send,        // the bytes [offset, offset + length) of the file
    SendMemory,  // the bytes [offset, offset + length), past the file's end (memory_at)
    SendFirst,   // the bytes [offset, offset + length) of the client's own first piece
    End,         // every byte it wants is sent: end the answer
    Cut,         // the fill failed: close the connection (never a short body as whole)
  };
  Kind kind = Kind::Wait;
  uint64_t offset = 0;
  uint64_t length = 0;
};
// With a Content-Length, the body's last byte is held back until the fill is
// done: a client never holds a whole body the fetch may still reject (a
// wrong Repr-Digest), since the close then leaves it one byte short. A range
// that ends before it is sent as soon as its bytes are in the file.
// `first`: the body's first bytes [0, first) are the client's in memory
// already (the origin's first piece, handed to the answer before it was
// written, so that the head never waits for the disk); sent from there
// under the same rules.
FillStep next_fill_step(const FillProgress::View& v, uint64_t next, std::optional<uint64_t> end,
                        uint64_t first = 0);

}  // namespace cdn::replica
