// SPDX-License-Identifier: MIT
#include "daemons/replicad/fill_stream.hpp"

#include <unistd.h>

#include <string_view>
#include <utility>

namespace cdn::replica {
namespace {

struct OpenFd {
  OpenFd(int f, std::shared_ptr<const void> o) : fd(f), owner(std::move(o)) {}
  ~OpenFd() {
    if (fd >= 0) ::close(fd);
  }
  OpenFd(const OpenFd&) = delete;
  OpenFd& operator=(const OpenFd&) = delete;
  int fd;
  std::shared_ptr<const void> owner;  // let go with the descriptor
};

// One client's stream. Owned by whatever will run its next pump: the fill's
// wake (while subscribed and armed), a pump posted to its inbox, or the
// connection's when_writable. The last owner may let go on the fill's
// thread: nothing here needs the loop to be destroyed.
class Streamer : public std::enable_shared_from_this<Streamer> {
 public:
  Streamer(net::Deferred d, std::shared_ptr<FillProgress> fill, int fd, uint64_t offset,
           std::optional<uint64_t> end, std::shared_ptr<daemon::Inbox> home,
           std::shared_ptr<const void> owner, std::shared_ptr<const std::string> first)
      : d_(std::move(d)),
        fill_(std::move(fill)),
        file_(std::make_shared<OpenFd>(fd, std::move(owner))),
        first_(std::move(first)),
        next_(offset),
        end_(end),
        home_(std::move(home)) {}

  void start() {
    std::weak_ptr<daemon::Inbox> home = home_;
    id_ = fill_->subscribe([self = shared_from_this(), home] {
      if (auto h = home.lock()) h->post([self] { self->pump(); });
    });
    pump();
  }

  void pump() {
    if (over_) return;
    for (;;) {
      net::Exchange* ex = d_.exchange();
      if (ex == nullptr || !ex->streaming()) {
        stop();  // the client went away
        return;
      }
      if (!ex->stream_ready()) {
        // The client has not taken what was sent: wait for it, not for the fill.
        ex->when_writable([self = shared_from_this()] { self->pump(); });
        return;
      }
      const FillStep step =
          next_fill_step(fill_->take(id_), next_, end_, first_ ? first_->size() : 0);
      if (first_ && next_ >= first_->size()) first_.reset();  // sent
      switch (step.kind) {
        case FillStep::Kind::Wait:
          return;  // the wake is armed
        case FillStep::Kind::Send:
          if (!ex->send_file_piece(file_->fd, step.offset, step.length, file_)) {
            stop();
            return;
          }
          next_ += step.length;
          continue;
        case FillStep::Kind::SendFirst:
          if (!ex->send_piece(std::string_view(*first_).substr(step.offset, step.length))) {
            stop();
            return;
          }
          next_ += step.length;
          continue;
        case FillStep::Kind::SendMemory: {
          // One chunk at most: the connection copies it, and takes no more
          // until it is sent (bounded memory per client).
          const auto [chunk, at] = fill_->memory_at(step.offset);
          if (!chunk) {
            ex->cut_stream();
            stop();
            return;
          }
          const auto piece = std::string_view(*chunk).substr(at, step.length);
          if (!ex->send_piece(piece)) {
            stop();
            return;
          }
          next_ += piece.size();
          continue;
        }
        case FillStep::Kind::End:
          ex->end_stream();
          stop();
          return;
        case FillStep::Kind::Cut:
          ex->cut_stream();
          stop();
          return;
      }
    }
  }

 private:
  void stop() {
    over_ = true;
    fill_->unsubscribe(id_);
  }

  net::Deferred d_;
  std::shared_ptr<FillProgress> fill_;
  std::shared_ptr<OpenFd> file_;
  std::shared_ptr<const std::string> first_;  // until its bytes are sent
  uint64_t next_;
  std::optional<uint64_t> end_;
  std::shared_ptr<daemon::Inbox> home_;
  uint64_t id_ = 0;
  bool over_ = false;
};

}  // namespace

bool can_stream(const http::Request& req, const FillProgress& fill) {
  return fill.view().length.has_value() || !(req.version_major == 1 && req.version_minor == 0);
}

void stream_fill(net::Exchange& ex, std::shared_ptr<FillProgress> fill, int fd, uint64_t offset,
                 std::optional<uint64_t> end, bool chunked, std::shared_ptr<daemon::Inbox> home,
                 std::shared_ptr<const void> owner, std::shared_ptr<const std::string> first) {
  net::Deferred d = ex.defer();
  ex.start_stream(chunked);
  if (!ex.streaming()) {  // HEAD: the head was the answer
    ::close(fd);
    return;
  }
  std::make_shared<Streamer>(std::move(d), std::move(fill), fd, offset, end, std::move(home),
                             std::move(owner), std::move(first))
      ->start();
}

}  // namespace cdn::replica
