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
  const size_t in = w_ ? w_->in.size() : 0;
  if (state_ >= State::Closing || eof_ || in >= options_.max_input) return 0;
  // Requests already read wait for resume(), or for the client to take its
  // answers (output_full()): reading more would only grow Work::in.
  const bool taking = state_ == State::Idle || state_ == State::Head;
  if (taking && (in > 0 || output_full())) return 0;
  return options_.max_input - in;
}

void ServerConnection::receive(std::string_view data, uint64_t now) {
  now_ = now;
  if (state_ >= State::Closing || data.empty()) return;
  if (!w_) w_ = std::make_unique<Work>(options_.limits);
  turn_ = 0;
  ++depth_;
  if (w_->in.empty() && (state_ == State::Idle || state_ == State::Head)) {
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

// Appends to Work::in, one buffer of max_input (a read takes no more than what
// is left of it) rather than an exact one and then a chain of doublings,
// whose buffers would be left to the allocator.
void ServerConnection::keep_input(std::string_view data) {
  const size_t need = w_->in.size() + data.size();
  if (need > w_->in.capacity()) {
    // A new string: reserve() on this one would double its capacity anyway.
    std::string grown;
    grown.reserve(std::max(need, options_.max_input));
    grown.append(w_->in);
    w_->in.swap(grown);
  }
  w_->in.append(data);
}

void ServerConnection::receive_eof(uint64_t now) {
  now_ = now;
  eof_ = true;
  settle();
}

bool ServerConnection::wants_resume() const {
  return (state_ == State::Idle || state_ == State::Head) && w_ && !w_->in.empty() &&
         !output_full();
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
  if (!w_ || w_->in.empty() || (state_ != State::Idle && state_ != State::Head)) return;
  // Work::in is not changed while process() reads it: nothing the handler can
  // call touches it (abort() leaves it to settle()).
  const size_t used = process(w_->in);
  if (state_ < State::Closing) w_->in.erase(0, used);
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
      w_->head_since = now_;
    }
    const auto res = w_->parser.feed(input.substr(offset));
    offset += res.consumed;
    if (res.status == ParseStatus::NeedMore) {
      if (w_->parser.headers_complete() && !check_expect(true)) return input.size();
      break;
    }
    if (res.status == ParseStatus::Error) {
      ++stats_->errors_total;
      error_answer(res.http_status);
      return input.size();
    }
    if (!check_expect(false)) return input.size();
    w_->rest = input.size() - offset;
    start_request();
    w_->rest = 0;
    ++turn_;
  }
  return offset;
}

// RFC 9110 section 10.1.1. The body is read (and discarded) whatever the
// handler will answer, so a client waiting for 100 Continue gets it as soon
// as the head is read; a request that came whole needs none. An expectation
// other than 100-continue is refused with 417; an HTTP/1.0 client's is ignored.
bool ServerConnection::check_expect(bool headers_only) {
  const Request& r = w_->parser.request();
  const auto expect = r.header("Expect");
  if (!expect || (r.version_major == 1 && r.version_minor == 0)) return true;
  if (!iequals(*expect, "100-continue")) {
    ++stats_->errors_total;
    error_answer(417);
    return false;
  }
  if (headers_only && !continued_) {
    continued_ = true;
    push_owned("HTTP/1.1 100 Continue\r\n\r\n", true);
  }
  return true;
}

void ServerConnection::start_request() {
  ++seq_;
  continued_ = false;
  ++stats_->requests_total;
  state_ = State::Handling;
  keep_alive_ = w_->parser.request().keep_alive;
  handler_.on_request(seq_, w_->parser.request());
}

// Moves on once the caller is back at the top: closes a connection that can
// take no more requests, and finishes a close whose output is out.
void ServerConnection::settle() {
  if (depth_ > 0) return;
  const bool input = w_ && !w_->in.empty();
  if (state_ >= State::Closing) {
    if (input) w_->in.clear();
  } else if (eof_ && (state_ == State::Idle || state_ == State::Head) && !input) {
    // Half-closed, every complete request answered: what is left (if
    // anything) is a request that can never end.
    close_after_output(Ending::Clean);
  }
  if (state_ == State::Closing && (!w_ || w_->out.empty())) state_ = State::Closed;
}

void ServerConnection::close_after_output(Ending ending) {
  if (w_) w_->writer.reset();
  if (state_ == State::Closed) return;
  state_ = State::Closing;
  ending_ = ending;
}

void ServerConnection::abort() {
  if (state_ == State::Closed) return;
  state_ = State::Closed;
  if (w_) {
    Work& w = *w_;
    w.writer.reset();
    // Pieces in flight stay until their units are done (write_done()); the rest goes now.
    while (w.out.size() > w.inflight_items) {
      if (w.out.back().is_file() && w.out.back().length > 0) --w.files;
      w.out.back() = Item{};
      w.out.pop_back();
    }
    w.unhanded_bytes = 0;
  }
  settle();
}

void ServerConnection::drain(uint64_t now) {
  now_ = now;
  draining_ = true;
  // Idle, or a request only partly read: nothing is promised, close now
  // (after what is still being sent). Otherwise the answer under way says
  // "Connection: close" (begin()) or the connection closes after it.
  if (state_ == State::Idle || state_ == State::Head) {
    const bool input = w_ && !w_->in.empty();
    close_after_output(!input && state_ == State::Idle ? Ending::Clean : Ending::Error);
  }
  settle();
}

void ServerConnection::refuse(std::string_view response) {
  if (state_ >= State::Closing) return;
  if (!w_) w_ = std::make_unique<Work>(options_.limits);
  push_owned(response, false);
  close_after_output(Ending::Error);
  settle();
}

// --------------------------------------------------------------- timeouts

void ServerConnection::tick(uint64_t now) {
  now_ = now;
  if (state_ == State::Closed) return;
  const bool sending = queued() > 0 || (w_ && w_->files > 0);
  if (sending && now >= after(progress_at_, options_.send_timeout)) {
    abort();
    return;
  }
  if (state_ == State::Head && now >= after(w_->head_since, options_.header_timeout)) {
    ++stats_->errors_total;
    error_answer(408);
  } else if (state_ == State::Idle && !sending && (!w_ || w_->in.empty()) &&
             now >= after(std::max(idle_since_, progress_at_),
                          seq_ == 0 ? options_.header_timeout : options_.idle_timeout)) {
    close_after_output(Ending::Clean);
  }
  settle();
}

uint64_t ServerConnection::next_deadline() const {
  if (state_ == State::Closed) return kNoDeadline;
  uint64_t d = kNoDeadline;
  const bool sending = queued() > 0 || (w_ && w_->files > 0);
  if (sending) d = after(progress_at_, options_.send_timeout);
  if (state_ == State::Head) d = std::min(d, after(w_->head_since, options_.header_timeout));
  if (state_ == State::Idle && !sending && (!w_ || w_->in.empty())) {
    // The first request gets header_timeout from the accept: a connection
    // that sends nothing costs little time.
    d = std::min(d, after(std::max(idle_since_, progress_at_),
                          seq_ == 0 ? options_.header_timeout : options_.idle_timeout));
  }
  return d;
}

// ----------------------------------------------------------------- output

bool ServerConnection::output_full() const {
  if (!w_) return false;
  return w_->unhanded_bytes >= options_.max_output || w_->units.size() >= options_.max_writes ||
         w_->inflight_bytes >= options_.max_queued || w_->files > 0 ||
         w_->out.size() + kPiecesPerAnswer > kMaxPieces;
}

OutputPlan ServerConnection::plan() const {
  OutputPlan p;
  if (state_ == State::Closed || !w_ || w_->out.size() == w_->inflight_items) return p;
  const bool clean_end = state_ == State::Closing && ending_ == Ending::Clean && w_->in.empty();
  const Item& first = w_->out[w_->inflight_items];
  if (first.is_file()) {
    // After every write under way (sendfile does not queue behind them).
    if (!w_->units.empty()) return p;
    p.kind = OutputPlan::Kind::File;
    p.fd = first.fd;
    p.offset = first.offset;
    p.length = first.length;
    p.more = w_->out.size() > w_->inflight_items + 1;
    p.last = !p.more && clean_end;
    return p;
  }
  if (!w_->units.empty()) {
    // Behind writes the client has not taken yet, small answers gather and
    // go as one write once those are done (output_full() stops taking
    // answers at max_output): a client that does not read holds one
    // coalesced write and one gathering buffer, not max_writes of them.
    // Anything else goes now.
    bool gather = true;
    for (size_t i = w_->inflight_items; i < w_->out.size() && gather; ++i) {
      gather = w_->out[i].coalescable;
    }
    if (gather) return p;
  }
  p.kind = OutputPlan::Kind::Bytes;
  size_t i = w_->inflight_items;
  for (; i < w_->out.size() && p.nbufs < OutputPlan::kMaxBufs; ++i) {
    const Item& it = w_->out[i];
    if (it.is_file()) break;
    const std::string_view b = it.bytes().substr(it.skip);
    p.bufs[p.nbufs++] = b;
    p.bytes += b.size();
  }
  p.more = i < w_->out.size();
  p.last = !p.more && clean_end;
  return p;
}

void ServerConnection::advance(size_t sent, size_t handed, uint64_t now) {
  if (!w_) return;  // no plan was made
  now_ = now;
  if (sent + handed > 0) progress_at_ = now;
  if (!w_->units.empty()) {
    // Nothing overtakes a write under way: bytes "sent" now queue behind it.
    handed += sent;
    sent = 0;
  }
  stats_->bytes_sent += sent;
  while (sent > 0 && !w_->out.empty()) {
    sent -= take(w_->out.front(), sent);
    if (!w_->out.front().done()) break;
    release_front();
  }
  if (handed > 0) {
    Unit u{handed, 0};
    while (handed > 0 && w_->inflight_items < w_->out.size()) {
      // A plan hands over whole byte pieces (their bytes stay put until the
      // unit is done); of a file, what the adapter copied into a buffer of its own.
      Item& it = w_->out[w_->inflight_items];
      handed -= take(it, handed);
      if (!it.done()) break;
      ++w_->inflight_items;
      ++u.items;
    }
    w_->inflight_bytes += u.bytes;
    if (w_->units.full()) {
      // Cannot happen (a unit holds a piece or file bytes, and files wait
      // for the units before them); the connection cannot keep count: end it.
      abort();
      return;
    }
    w_->units.push_back() = u;
  }
  settle();
}

size_t ServerConnection::take(Item& it, size_t n) {
  if (it.is_file()) {
    const size_t t = static_cast<size_t>(std::min<uint64_t>(n, it.length));
    it.offset += t;
    it.length -= t;
    if (it.length == 0) --w_->files;
    return t;
  }
  const size_t t = std::min(n, it.bytes().size() - it.skip);
  it.skip += t;
  w_->unhanded_bytes -= t;
  return t;
}

void ServerConnection::write_done(uint64_t now) {
  if (!w_ || w_->units.empty()) return;
  now_ = now;
  const Unit u = w_->units.front();
  w_->units.pop_front();
  w_->inflight_bytes -= u.bytes;
  if (state_ != State::Closed) {
    stats_->bytes_sent += u.bytes;
    progress_at_ = now;
  }
  for (size_t k = 0; k < u.items; ++k) release_front();
  w_->inflight_items -= u.items;
  settle();
}

void ServerConnection::note_output_start() {
  if (queued() == 0 && w_->files == 0) progress_at_ = now_;
}

ServerConnection::Item* ServerConnection::new_item() {
  if (w_->out.full()) {
    // Answers are taken only with room for theirs (output_full()): a handler
    // that answers with more pieces than that loses its connection.
    abort();
    return nullptr;
  }
  return &w_->out.push_back();
}

void ServerConnection::push_owned(std::string_view bytes, bool coalescable) {
  if (Item* it = push_bytes(bytes, coalescable)) it->own.assign(bytes);
}

// As push_owned(Work::head): a slot that has no buffer yet takes head's rather
// than allocate one (head gets a buffer again at the next begin()), so a
// connection that answers once allocates one buffer for its output, not two.
void ServerConnection::push_head() {
  if (Item* it = push_bytes(w_->head, true)) {
    if (it->own.capacity() < w_->head.size()) {
      it->own.swap(w_->head);
    } else {
      it->own.assign(w_->head);
    }
  }
  w_->head.clear();
}

ServerConnection::Item* ServerConnection::push_bytes(std::string_view bytes, bool coalescable) {
  if (bytes.empty() || state_ == State::Closed) return nullptr;
  note_output_start();
  coalescable = coalescable && bytes.size() <= kCoalesceMax;
  if (coalescable && w_->out.size() > w_->inflight_items && w_->out.back().coalescable &&
      w_->out.back().own.size() + bytes.size() <= kCoalesceCapacity) {
    std::string& own = w_->out.back().own;
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
    w_->unhanded_bytes += bytes.size();
    return nullptr;
  }
  Item* it = new_item();
  if (it == nullptr) return nullptr;
  it->coalescable = coalescable;
  w_->unhanded_bytes += bytes.size();
  return it;
}

void ServerConnection::push_view(std::string_view bytes, std::shared_ptr<const void> owner) {
  if (bytes.empty() || state_ == State::Closed) return;
  if (!w_->units.empty() && bytes.size() <= kCoalesceMax) {
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
  w_->unhanded_bytes += bytes.size();
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
  ++w_->files;
}

void ServerConnection::release_front() {
  Item& it = w_->out.front();
  // The slot keeps its buffer for the next piece, unless a big copied body grew it.
  std::string own;
  if (it.own.capacity() <= kCoalesceCapacity) {
    own.swap(it.own);
    own.clear();
  }
  it = Item{};
  it.own.swap(own);
  w_->out.pop_front();
}

// ---------------------------------------------------------------- answers

const Request& ServerConnection::request() const {
  static const Request kNone;
  return w_ ? w_->parser.request() : kNone;
}

bool ServerConnection::interim(uint64_t seq, int status, const std::vector<Header>& headers) {
  if (!is_current(seq) || state_ != State::Handling || status < 100 || status > 199) return false;
  const Request& r = w_->parser.request();
  if (r.version_major == 1 && r.version_minor == 0) return false;
  w_->head.clear();
  w_->head.append("HTTP/1.1 ").append(std::to_string(status)).append(" ");
  w_->head.append(reason_phrase(status)).append("\r\n");
  for (const auto& h : headers) w_->head.append(h.name).append(": ").append(h.value).append("\r\n");
  w_->head.append("\r\n");
  push_head();
  settle();
  return state_ != State::Closed;
}

HeadWriter* ServerConnection::begin(uint64_t seq, int status, bool relayed) {
  if (!is_current(seq) || state_ != State::Handling) return nullptr;
  const Request& r = w_->parser.request();
  // A drain or a half-close may have begun since the request arrived (e.g.
  // while the answer was deferred): this answer says so.
  keep_alive_ = r.keep_alive && !draining_ &&
                (options_.max_requests == 0 || seq_ < options_.max_requests) &&
                !(eof_ && input_after() == 0);
  if (w_->head.capacity() < kHeadReserve) w_->head.reserve(kHeadReserve);
  w_->head.clear();
  w_->writer.emplace(w_->head);
  w_->writer->status_line(status);
  if (!relayed) w_->writer->prebuilt(handler_.common_headers());
  if (!keep_alive_) {
    w_->writer->header("Connection", "close");
  } else if (r.version_major == 1 && r.version_minor == 0) {
    w_->writer->header("Connection", "keep-alive");
  }
  state_ = State::Answering;
  return &*w_->writer;
}

bool ServerConnection::finish(uint64_t seq, std::string_view body,
                              std::shared_ptr<const void> owner) {
  if (!is_current(seq) || state_ != State::Answering) return false;
  w_->writer->end();
  w_->writer.reset();
  if (is_head()) body = {};
  if (!body.empty() && !owner && body.size() <= kInlineBody) {
    // Small bodies (redirects, errors, JSON) go in the head's buffer.
    w_->head.append(body);
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
  w_->writer->end();
  w_->writer.reset();
  push_head();
  if (!is_head() && file.length > 0) push_file(std::move(file));
  complete_answer();
  settle();
  return true;
}

bool ServerConnection::start_stream(uint64_t seq, bool chunked) {
  if (!is_current(seq) || state_ != State::Answering) return false;
  const Request& r = w_->parser.request();
  // Chunked framing is HTTP/1.1's; an HTTP/1.0 client gets a whole answer.
  if (chunked && r.version_major == 1 && r.version_minor == 0) return false;
  chunked_ = chunked;
  if (chunked) w_->writer->header("Transfer-Encoding", "chunked");
  w_->writer->end();
  w_->writer.reset();
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
  if (w_->inflight_bytes > 0 || w_->unhanded_bytes >= options_.max_output) return false;
  if (chunked_) {
    char size[20];
    const int n = std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
    w_->head.assign(size, static_cast<size_t>(n)).append(piece).append("\r\n");
  } else {
    w_->head.assign(piece);
  }
  push_head();
  return state_ != State::Closed;
}

bool ServerConnection::stream_ready() const {
  // Room for a chunk's size line, the file and its CRLF.
  return state_ == State::Streaming && w_->files == 0 && w_->inflight_bytes == 0 &&
         w_->unhanded_bytes < options_.max_output && w_->out.size() + 3 <= kMaxPieces;
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
  w_->writer.reset();
  if (!is_head()) w_->head.append(text).push_back('\n');
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
    w_->parser.reset();
    close_after_output(Ending::Error);
    settle();
    return true;
  }
  w_->writer.reset();
  keep_alive_ = false;
  w_->head.clear();
  write_text_answer(w_->head, status, reason_phrase(status), !is_head());
  push_head();
  w_->parser.reset();
  close_after_output(Ending::Error);
  settle();
  return true;
}

void ServerConnection::complete_answer() {
  w_->writer.reset();
  if (state_ == State::Closed) return;
  if (!keep_alive_ || draining_) {
    // No request follows: the parser keeps this one (a reset would only
    // move its headers aside for a next request, at a cost).
    close_after_output(input_after() == 0 ? Ending::Clean : Ending::Error);
    return;
  }
  w_->parser.reset();
  state_ = State::Idle;
  idle_since_ = now_;
}

// An answer of the connection's own (parse errors, 408, 417): it closes after it.
void ServerConnection::error_answer(int status) {
  handler_.on_error_answer(status);
  w_->writer.reset();
  w_->head.clear();
  write_text_answer(w_->head, status, reason_phrase(status), true);
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
