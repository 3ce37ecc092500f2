// SPDX-License-Identifier: MIT
#include "common/http/connection.hpp"

#include <algorithm>
#include <cstdio>

namespace cdn::http {

namespace {
// Answers up to this size are coalesced with the answers before them that
// are not handed over yet (one buffer, one write); bigger ones keep their
// own piece (an owned body is not copied).
constexpr size_t kCoalesceMax = 8 * 1024;
// A coalescing buffer never grows past this: room for max_output and one more answer.
constexpr size_t kCoalesceCapacity = 16 * 1024;
// Bodies up to this size without an owner are copied into the head's buffer.
constexpr size_t kInlineBody = 4096;
// A response head is built in a buffer this big from the start.
constexpr size_t kHeadReserve = 512;
// Pieces one answer may add: head, body or file, and a 100 Continue before them.
constexpr size_t kPiecesPerAnswer = 3;

uint64_t after(uint64_t t, std::chrono::milliseconds d) {
  return t + static_cast<uint64_t>(d.count());
}

// Where a connection whose owner keeps no figures (tests) counts: one per
// thread, as a counter has one writer.
ConnectionStats& unowned_stats() {
  static thread_local ConnectionStats stats;
  return stats;
}
}  // namespace

ServerConnection::ServerConnection(ConnectionHandler& handler, const ConnectionOptions& options,
                                   uint64_t now, ConnectionStats* stats)
    : handler_(handler),
      options_(options),
      stats_(stats != nullptr ? stats : &unowned_stats()),
      now_(now),
      idle_since_(now) {}

// ------------------------------------------------------------------ input

size_t ServerConnection::read_budget() const {
  if (state_ >= State::Closing || eof_ || in_.size() >= options_.max_input) return 0;
  // Requests already read wait for resume(), or for the client to take its
  // answers (output_full()): reading more would only grow in_.
  const bool taking = state_ == State::Idle || state_ == State::Head;
  if (taking && (!in_.empty() || output_full())) return 0;
  return options_.max_input - in_.size();
}

void ServerConnection::receive(std::string_view data, uint64_t now) {
  now_ = now;
  if (state_ >= State::Closing || data.empty()) return;
  turn_ = 0;
  ++depth_;
  if (in_.empty() && (state_ == State::Idle || state_ == State::Head)) {
    // Straight from the transport's buffer: only what is left is copied.
    const size_t used = process(data);
    if (state_ < State::Closing) keep_input(data.substr(used));
  } else {
    keep_input(data);
    process_input();
  }
  --depth_;
  settle();
}

// Appends to in_, one buffer of max_input (a read takes no more than what
// is left of it) rather than an exact one and then a chain of doublings,
// whose buffers would be left to the allocator.
void ServerConnection::keep_input(std::string_view data) {
  const size_t need = in_.size() + data.size();
  if (need > in_.capacity()) {
    // A new string: reserve() on this one would double its capacity anyway.
    std::string grown;
    grown.reserve(std::max(need, options_.max_input));
    grown.append(in_);
    in_.swap(grown);
  }
  in_.append(data);
}

void ServerConnection::receive_eof(uint64_t now) {
  now_ = now;
  eof_ = true;
  settle();
}

bool ServerConnection::wants_resume() const {
  return (state_ == State::Idle || state_ == State::Head) && !in_.empty() && !output_full();
}

void ServerConnection::resume(uint64_t now) {
  turn_ = 0;
  proceed(now);
}

void ServerConnection::proceed(uint64_t now) {
  now_ = now;
  if (state_ >= State::Closing) return;
  ++depth_;
  process_input();
  --depth_;
  settle();
}

void ServerConnection::process_input() {
  if (in_.empty() || (state_ != State::Idle && state_ != State::Head)) return;
  // in_ is not changed while process() reads it: nothing the handler can
  // call touches it (abort() leaves it to settle()).
  const size_t used = process(in_);
  if (state_ < State::Closing) in_.erase(0, used);
}

size_t ServerConnection::process(std::string_view input) {
  size_t offset = 0;
  while (offset < input.size()) {
    if (state_ != State::Idle && state_ != State::Head) break;
    if (output_full() || turn_spent()) break;
    if (state_ == State::Idle) {
      // The whole head must arrive within header_timeout of its first byte:
      // a slow client cannot extend it byte by byte.
      state_ = State::Head;
      head_since_ = now_;
    }
    if (!parser_) parser_ = std::make_unique<RequestParser>(options_.limits);
    const auto res = parser_->feed(input.substr(offset));
    offset += res.consumed;
    if (res.status == ParseStatus::NeedMore) {
      if (parser_->headers_complete() && !check_expect(true)) return input.size();
      break;
    }
    if (res.status == ParseStatus::Error) {
      ++stats_->errors_total;
      error_answer(res.http_status);
      return input.size();
    }
    if (!check_expect(false)) return input.size();
    rest_ = input.size() - offset;
    start_request();
    rest_ = 0;
    ++turn_;
  }
  return offset;
}

// RFC 9110 section 10.1.1. The body is read (and discarded) whatever the
// handler will answer, so a client waiting for 100 Continue gets it as soon
// as the head is read; a request that came whole needs none. An expectation
// other than 100-continue is refused with 417; an HTTP/1.0 client's is ignored.
bool ServerConnection::check_expect(bool headers_only) {
  const Request& r = parser_->request();
  const auto expect = r.header("Expect");
  if (!expect || (r.version_major == 1 && r.version_minor == 0)) return true;
  if (!iequals(*expect, "100-continue")) {
    ++stats_->errors_total;
    error_answer(417);
    return false;
  }
  if (headers_only && continued_ != seq_ + 1) {
    continued_ = seq_ + 1;
    push_owned("HTTP/1.1 100 Continue\r\n\r\n", true);
  }
  return true;
}

void ServerConnection::start_request() {
  ++seq_;
  ++stats_->requests_total;
  state_ = State::Handling;
  keep_alive_ = parser_->request().keep_alive;
  handler_.on_request(seq_, parser_->request());
}

// Moves on once the caller is back at the top: closes a connection that can
// take no more requests, and finishes a close whose output is out.
void ServerConnection::settle() {
  if (depth_ > 0) return;
  if (state_ >= State::Closing) {
    in_.clear();
  } else if (eof_ && (state_ == State::Idle || state_ == State::Head) && in_.empty()) {
    // Half-closed, every complete request answered: what is left (if
    // anything) is a request that can never end.
    close_after_output(Ending::Clean);
  }
  if (state_ == State::Closing && out_.empty()) state_ = State::Closed;
}

void ServerConnection::close_after_output(Ending ending) {
  writer_.reset();
  if (state_ == State::Closed) return;
  state_ = State::Closing;
  ending_ = ending;
}

void ServerConnection::abort() {
  if (state_ == State::Closed) return;
  state_ = State::Closed;
  writer_.reset();
  // Pieces in flight stay until their units are done (write_done()); the rest goes now.
  while (out_.size() > inflight_items_) {
    if (out_.back().is_file() && out_.back().length > 0) --files_;
    out_.back() = Item{};
    out_.pop_back();
  }
  unhanded_bytes_ = 0;
  settle();
}

void ServerConnection::drain(uint64_t now) {
  now_ = now;
  draining_ = true;
  // Idle, or a request only partly read: nothing is promised, close now
  // (after what is still being sent). Otherwise the answer under way says
  // "Connection: close" (begin()) or the connection closes after it.
  if (state_ == State::Idle || state_ == State::Head) {
    close_after_output(in_.empty() && state_ == State::Idle ? Ending::Clean : Ending::Error);
  }
  settle();
}

void ServerConnection::refuse(std::string_view response) {
  if (state_ >= State::Closing) return;
  push_owned(response, false);
  close_after_output(Ending::Error);
  settle();
}

// --------------------------------------------------------------- timeouts

void ServerConnection::tick(uint64_t now) {
  now_ = now;
  if (state_ == State::Closed) return;
  const bool sending = queued() > 0 || files_ > 0;
  if (sending && now >= after(progress_at_, options_.send_timeout)) {
    abort();
    return;
  }
  if (state_ == State::Head && now >= after(head_since_, options_.header_timeout)) {
    ++stats_->errors_total;
    error_answer(408);
  } else if (state_ == State::Idle && !sending && in_.empty() &&
             now >= after(std::max(idle_since_, progress_at_),
                          seq_ == 0 ? options_.header_timeout : options_.idle_timeout)) {
    close_after_output(Ending::Clean);
  }
  settle();
}

uint64_t ServerConnection::next_deadline() const {
  if (state_ == State::Closed) return kNoDeadline;
  uint64_t d = kNoDeadline;
  const bool sending = queued() > 0 || files_ > 0;
  if (sending) d = after(progress_at_, options_.send_timeout);
  if (state_ == State::Head) d = std::min(d, after(head_since_, options_.header_timeout));
  if (state_ == State::Idle && !sending && in_.empty()) {
    // The first request gets header_timeout from the accept: a connection
    // that sends nothing costs little time.
    d = std::min(d, after(std::max(idle_since_, progress_at_),
                          seq_ == 0 ? options_.header_timeout : options_.idle_timeout));
  }
  return d;
}

// ----------------------------------------------------------------- output

bool ServerConnection::output_full() const {
  return unhanded_bytes_ >= options_.max_output || units_.size() >= options_.max_writes ||
         inflight_bytes_ >= options_.max_queued || files_ > 0 ||
         out_.size() + kPiecesPerAnswer > kMaxPieces;
}

OutputPlan ServerConnection::plan() const {
  OutputPlan p;
  if (state_ == State::Closed || out_.size() == inflight_items_) return p;
  const bool clean_end = state_ == State::Closing && ending_ == Ending::Clean && in_.empty();
  const Item& first = out_[inflight_items_];
  if (first.is_file()) {
    // After every write under way (sendfile does not queue behind them).
    if (!units_.empty()) return p;
    p.kind = OutputPlan::Kind::File;
    p.fd = first.fd;
    p.offset = first.offset;
    p.length = first.length;
    p.more = out_.size() > inflight_items_ + 1;
    p.last = !p.more && clean_end;
    return p;
  }
  if (!units_.empty()) {
    // Behind writes the client has not taken yet, small answers gather and
    // go as one write once those are done (output_full() stops taking
    // answers at max_output): a client that does not read holds one
    // coalesced write and one gathering buffer, not max_writes of them.
    // Anything else goes now.
    bool gather = true;
    for (size_t i = inflight_items_; i < out_.size() && gather; ++i) {
      gather = out_[i].coalescable;
    }
    if (gather) return p;
  }
  p.kind = OutputPlan::Kind::Bytes;
  size_t i = inflight_items_;
  for (; i < out_.size() && p.nbufs < OutputPlan::kMaxBufs; ++i) {
    const Item& it = out_[i];
    if (it.is_file()) break;
    const std::string_view b = it.bytes().substr(it.skip);
    p.bufs[p.nbufs++] = b;
    p.bytes += b.size();
  }
  p.more = i < out_.size();
  p.last = !p.more && clean_end;
  return p;
}

void ServerConnection::advance(size_t sent, size_t handed, uint64_t now) {
  now_ = now;
  if (sent + handed > 0) progress_at_ = now;
  if (!units_.empty()) {
    // Nothing overtakes a write under way: bytes "sent" now queue behind it.
    handed += sent;
    sent = 0;
  }
  stats_->bytes_sent += sent;
  while (sent > 0 && !out_.empty()) {
    sent -= take(out_.front(), sent);
    if (!out_.front().done()) break;
    release_front();
  }
  if (handed > 0) {
    Unit u{handed, 0};
    while (handed > 0 && inflight_items_ < out_.size()) {
      // A plan hands over whole byte pieces (their bytes stay put until the
      // unit is done); of a file, what the adapter copied into a buffer of its own.
      Item& it = out_[inflight_items_];
      handed -= take(it, handed);
      if (!it.done()) break;
      ++inflight_items_;
      ++u.items;
    }
    inflight_bytes_ += u.bytes;
    if (units_.full()) {
      // Cannot happen (a unit holds a piece or file bytes, and files wait
      // for the units before them); the connection cannot keep count: end it.
      abort();
      return;
    }
    units_.push_back() = u;
  }
  settle();
}

size_t ServerConnection::take(Item& it, size_t n) {
  if (it.is_file()) {
    const size_t t = static_cast<size_t>(std::min<uint64_t>(n, it.length));
    it.offset += t;
    it.length -= t;
    if (it.length == 0) --files_;
    return t;
  }
  const size_t t = std::min(n, it.bytes().size() - it.skip);
  it.skip += t;
  unhanded_bytes_ -= t;
  return t;
}

void ServerConnection::write_done(uint64_t now) {
  if (units_.empty()) return;
  now_ = now;
  const Unit u = units_.front();
  units_.pop_front();
  inflight_bytes_ -= u.bytes;
  if (state_ != State::Closed) {
    stats_->bytes_sent += u.bytes;
    progress_at_ = now;
  }
  for (size_t k = 0; k < u.items; ++k) release_front();
  inflight_items_ -= u.items;
  settle();
}

void ServerConnection::note_output_start() {
  if (queued() == 0 && files_ == 0) progress_at_ = now_;
}

ServerConnection::Item* ServerConnection::new_item() {
  if (out_.full()) {
    // Answers are taken only with room for theirs (output_full()): a handler
    // that answers with more pieces than that loses its connection.
    abort();
    return nullptr;
  }
  return &out_.push_back();
}

void ServerConnection::push_owned(std::string_view bytes, bool coalescable) {
  if (Item* it = push_bytes(bytes, coalescable)) it->own.assign(bytes);
}

// As push_owned(head_): a slot that has no buffer yet takes head_'s rather
// than allocate one (head_ gets a buffer again at the next begin()), so a
// connection that answers once allocates one buffer for its output, not two.
void ServerConnection::push_head() {
  if (Item* it = push_bytes(head_, true)) {
    if (it->own.capacity() < head_.size()) {
      it->own.swap(head_);
    } else {
      it->own.assign(head_);
    }
  }
  head_.clear();
}

ServerConnection::Item* ServerConnection::push_bytes(std::string_view bytes, bool coalescable) {
  if (bytes.empty() || state_ == State::Closed) return nullptr;
  note_output_start();
  coalescable = coalescable && bytes.size() <= kCoalesceMax;
  if (coalescable && out_.size() > inflight_items_ && out_.back().coalescable &&
      out_.back().own.size() + bytes.size() <= kCoalesceCapacity) {
    std::string& own = out_.back().own;
    if (own.size() + bytes.size() > own.capacity()) {
      // Straight to the size a coalescing buffer usually reaches (output_full()
      // stops taking answers at max_output; it stays in its slot for the
      // next one), rather than a chain of doublings.
      std::string grown;
      grown.reserve(std::max(own.size() + bytes.size(), options_.max_output + 2 * kHeadReserve));
      grown.append(own);
      own.swap(grown);
    }
    own.append(bytes);
    unhanded_bytes_ += bytes.size();
    return nullptr;
  }
  Item* it = new_item();
  if (it == nullptr) return nullptr;
  it->coalescable = coalescable;
  unhanded_bytes_ += bytes.size();
  return it;
}

void ServerConnection::push_view(std::string_view bytes, std::shared_ptr<const void> owner) {
  if (bytes.empty() || state_ == State::Closed) return;
  if (!units_.empty() && bytes.size() <= kCoalesceMax) {
    // Behind writes the client has not taken yet a small body is copied and
    // gathered with the answers around it (see plan()), as an owned one is:
    // one write in flight, not one per answer, for a client that does not read.
    push_owned(bytes, true);
    return;
  }
  note_output_start();
  Item* it = new_item();
  if (it == nullptr) return;
  it->view = bytes;
  it->owner = std::move(owner);
  unhanded_bytes_ += bytes.size();
}

void ServerConnection::push_file(FileRange file) {
  if (state_ == State::Closed) return;
  note_output_start();
  Item* it = new_item();
  if (it == nullptr) return;
  it->fd = file.fd;
  it->offset = file.offset;
  it->length = file.length;
  it->owner = std::move(file.owner);
  ++files_;
}

void ServerConnection::release_front() {
  Item& it = out_.front();
  // The slot keeps its buffer for the next piece, unless a big copied body grew it.
  std::string own;
  if (it.own.capacity() <= kCoalesceCapacity) {
    own.swap(it.own);
    own.clear();
  }
  it = Item{};
  it.own.swap(own);
  out_.pop_front();
}

// ---------------------------------------------------------------- answers

const Request& ServerConnection::request() const {
  static const Request kNone;
  return parser_ ? parser_->request() : kNone;
}

bool ServerConnection::interim(uint64_t seq, int status, const std::vector<Header>& headers) {
  if (!is_current(seq) || state_ != State::Handling || status < 100 || status > 199) return false;
  const Request& r = parser_->request();
  if (r.version_major == 1 && r.version_minor == 0) return false;
  head_.clear();
  head_.append("HTTP/1.1 ").append(std::to_string(status)).append(" ");
  head_.append(reason_phrase(status)).append("\r\n");
  for (const auto& h : headers) head_.append(h.name).append(": ").append(h.value).append("\r\n");
  head_.append("\r\n");
  push_head();
  settle();
  return state_ != State::Closed;
}

HeadWriter* ServerConnection::begin(uint64_t seq, int status, bool relayed) {
  if (!is_current(seq) || state_ != State::Handling) return nullptr;
  const Request& r = parser_->request();
  // A drain or a half-close may have begun since the request arrived (e.g.
  // while the answer was deferred): this answer says so.
  keep_alive_ = r.keep_alive && !draining_ &&
                (options_.max_requests == 0 || seq_ < options_.max_requests) &&
                !(eof_ && input_after() == 0);
  if (head_.capacity() < kHeadReserve) head_.reserve(kHeadReserve);
  head_.clear();
  writer_.emplace(head_);
  writer_->status_line(status);
  if (!relayed) writer_->prebuilt(handler_.common_headers());
  if (!keep_alive_) {
    writer_->header("Connection", "close");
  } else if (r.version_major == 1 && r.version_minor == 0) {
    writer_->header("Connection", "keep-alive");
  }
  state_ = State::Answering;
  return &*writer_;
}

bool ServerConnection::finish(uint64_t seq, std::string_view body,
                              std::shared_ptr<const void> owner) {
  if (!is_current(seq) || state_ != State::Answering) return false;
  writer_->end();
  writer_.reset();
  if (is_head()) body = {};
  if (!body.empty() && !owner && body.size() <= kInlineBody) {
    // Small bodies (redirects, errors, JSON) go in the head's buffer.
    head_.append(body);
    body = {};
  }
  push_head();
  if (!body.empty()) {
    if (owner) {
      push_view(body, std::move(owner));
    } else {
      push_owned(body, false);
    }
  }
  complete_answer();
  settle();
  return true;
}

bool ServerConnection::finish_file(uint64_t seq, FileRange file) {
  if (!is_current(seq) || state_ != State::Answering) return false;
  writer_->end();
  writer_.reset();
  push_head();
  if (!is_head() && file.length > 0) push_file(std::move(file));
  complete_answer();
  settle();
  return true;
}

bool ServerConnection::start_stream(uint64_t seq, bool chunked) {
  if (!is_current(seq) || state_ != State::Answering) return false;
  const Request& r = parser_->request();
  // Chunked framing is HTTP/1.1's; an HTTP/1.0 client gets a whole answer.
  if (chunked && r.version_major == 1 && r.version_minor == 0) return false;
  chunked_ = chunked;
  if (chunked) writer_->header("Transfer-Encoding", "chunked");
  writer_->end();
  writer_.reset();
  push_head();
  if (is_head()) {
    complete_answer();
  } else {
    state_ = State::Streaming;
  }
  settle();
  return true;
}

bool ServerConnection::send_piece(uint64_t seq, std::string_view piece) {
  if (!is_current(seq) || state_ != State::Streaming || piece.empty()) return false;
  // Bytes still in flight mean the kernel's send buffer is full: the client
  // has stopped reading.
  if (inflight_bytes_ > 0 || unhanded_bytes_ >= options_.max_output) return false;
  if (chunked_) {
    char size[20];
    const int n = std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
    head_.assign(size, static_cast<size_t>(n)).append(piece).append("\r\n");
  } else {
    head_.assign(piece);
  }
  push_head();
  return state_ != State::Closed;
}

bool ServerConnection::stream_ready() const {
  // Room for a chunk's size line, the file and its CRLF.
  return state_ == State::Streaming && files_ == 0 && inflight_bytes_ == 0 &&
         unhanded_bytes_ < options_.max_output && out_.size() + 3 <= kMaxPieces;
}

bool ServerConnection::send_file_piece(uint64_t seq, FileRange file) {
  if (!is_current(seq) || !stream_ready() || file.length == 0) return false;
  if (chunked_) {
    char size[20];
    const int n =
        std::snprintf(size, sizeof size, "%llx\r\n", static_cast<unsigned long long>(file.length));
    push_owned(std::string_view(size, static_cast<size_t>(n)), false);
  }
  push_file(std::move(file));
  if (chunked_) push_owned("\r\n", false);
  settle();
  return state_ != State::Closed;
}

bool ServerConnection::end_stream(uint64_t seq) {
  if (!is_current(seq) || state_ != State::Streaming) return false;
  if (chunked_) push_owned("0\r\n\r\n", true);
  complete_answer();
  settle();
  return true;
}

bool ServerConnection::reply(uint64_t seq, int status, std::string_view text) {
  HeadWriter* h = begin(seq, status);
  if (h == nullptr) return false;
  h->header("Content-Type", "text/plain; charset=utf-8");
  h->header("Content-Length", static_cast<uint64_t>(text.size() + 1));
  h->end();
  writer_.reset();
  if (!is_head()) head_.append(text).push_back('\n');
  push_head();
  complete_answer();
  settle();
  return true;
}

bool ServerConnection::fail(uint64_t seq, int status) {
  if (!is_current(seq)) return false;
  if (state_ == State::Streaming) {
    // The head is gone: only the close can tell the client (its chunked body
    // never ends).
    if (parser_) parser_->reset();
    close_after_output(Ending::Error);
    settle();
    return true;
  }
  writer_.reset();
  keep_alive_ = false;
  head_.clear();
  write_text_answer(head_, status, reason_phrase(status), !is_head());
  push_head();
  if (parser_) parser_->reset();
  close_after_output(Ending::Error);
  settle();
  return true;
}

void ServerConnection::complete_answer() {
  writer_.reset();
  if (state_ == State::Closed) return;
  if (!keep_alive_ || draining_) {
    // No request follows: the parser keeps this one (a reset would only
    // move its headers aside for a next request, at a cost).
    close_after_output(input_after() == 0 ? Ending::Clean : Ending::Error);
    return;
  }
  if (parser_) parser_->reset();
  state_ = State::Idle;
  idle_since_ = now_;
}

// An answer of the connection's own (parse errors, 408, 417): it closes after it.
void ServerConnection::error_answer(int status) {
  handler_.on_error_answer(status);
  writer_.reset();
  head_.clear();
  write_text_answer(head_, status, reason_phrase(status), true);
  push_head();
  close_after_output(Ending::Error);
}

void ServerConnection::write_text_answer(std::string& out, int status, std::string_view text,
                                         bool with_body) {
  HeadWriter w(out);
  w.status_line(status);
  w.prebuilt(handler_.common_headers());
  w.header("Connection", "close");
  w.header("Content-Type", "text/plain; charset=utf-8");
  w.header("Content-Length", static_cast<uint64_t>(text.size() + 1));
  w.end();
  if (with_body) out.append(text).push_back('\n');
}

}  // namespace cdn::http
