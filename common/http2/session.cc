// SPDX-License-Identifier: MIT
#include "common/http2/session.hpp"

#include <nghttp2/nghttp2.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "common/text/text.hpp"

namespace cdn::http2 {

namespace {
constexpr uint64_t kResetInterval = 1000;  // ms over which client resets are counted

long pread_file(int fd, uint64_t offset, uint8_t* buf, size_t n) {
  return static_cast<long>(::pread(fd, buf, n, static_cast<off_t>(offset)));
}

// Connection-specific fields have no place in HTTP/2 (RFC 9113 8.2.2).
bool connection_specific(std::string_view name) {
  return text::iequals(name, "connection") || text::iequals(name, "keep-alive") ||
         text::iequals(name, "proxy-connection") || text::iequals(name, "transfer-encoding") ||
         text::iequals(name, "upgrade");
}

nghttp2_nv make_nv(std::string_view name, std::string_view value) {
  return nghttp2_nv{
      .name = reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
      .value = reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())),
      .namelen = name.size(),
      .valuelen = value.size(),
      .flags = NGHTTP2_NV_FLAG_NONE,
  };
}

// The header block of an answer: ":status" and the lines, names lower-cased
// (nghttp2 copies them before submit returns).
struct HeaderBlock {
  std::string status;
  std::vector<std::string> names;
  std::vector<nghttp2_nv> nva;
  HeaderBlock(int code, std::string_view lines) : status(std::to_string(code)) {
    std::vector<std::pair<size_t, std::string_view>> values;
    while (!lines.empty()) {
      const size_t eol = lines.find("\r\n");
      std::string_view line = lines.substr(0, eol);
      lines = eol == std::string_view::npos ? std::string_view() : lines.substr(eol + 2);
      const size_t colon = line.find(':');
      if (colon == std::string_view::npos || colon == 0) continue;
      const std::string_view name = line.substr(0, colon);
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
        value.remove_prefix(1);
      }
      if (connection_specific(name)) continue;
      std::string lower(name);
      std::transform(lower.begin(), lower.end(), lower.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      names.push_back(std::move(lower));
      values.emplace_back(names.size() - 1, value);
    }
    nva.reserve(values.size() + 1);
    nva.push_back(make_nv(":status", status));
    for (const auto& [i, value] : values) nva.push_back(make_nv(names[i], value));
  }
};
}  // namespace

// nghttp2's callbacks, as static functions over the Session (user_data).
// None lets an exception out: a failure fails the session.
struct Callbacks {
  static Session& of(void* user) { return *static_cast<Session*>(user); }

  static int begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    Session& s = of(user);
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    // After the client's GOAWAY (or its EOF, or our own close) no new stream
    // is served, however the bytes that carry it were split.
    if (s.peer_goaway_ || s.eof_ || s.aborted_) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    try {
      auto st = std::make_unique<Session::Stream>();
      st->id = frame->hd.stream_id;
      st->opened_at = s.now_;
      st->req.version_major = 2;
      st->req.version_minor = 0;
      s.streams_[st->id] = std::move(st);
    } catch (...) {
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
  }

  static int header(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                    size_t namelen, const uint8_t* value, size_t valuelen, uint8_t /*flags*/,
                    void* user) {
    Session& s = of(user);
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    Session::Stream* st = s.find(frame->hd.stream_id);
    if (st == nullptr || st->too_big || st->handed) return 0;
    const std::string_view n(reinterpret_cast<const char*>(name), namelen);
    const std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    st->header_bytes += namelen + valuelen;
    const auto& lim = s.options_.limits;
    if (st->header_bytes > lim.max_header_bytes || st->req.headers.size() >= lim.max_headers ||
        (n == ":path" && valuelen > lim.max_request_line)) {
      st->too_big = true;
      st->req.headers.clear();
      return 0;
    }
    try {
      if (n == ":method") {
        st->req.method.assign(v);
      } else if (n == ":path") {
        st->req.target.assign(v);
      } else if (n == ":authority") {
        if (!st->req.header("host")) st->req.headers.push_back({"host", std::string(v)});
      } else if (!n.empty() && n.front() != ':') {
        st->req.headers.push_back({std::string(n), std::string(v)});
      }
    } catch (...) {
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
  }

  static int data_chunk(nghttp2_session*, uint8_t /*flags*/, int32_t id, const uint8_t* data,
                        size_t len, void* user) {
    Session& s = of(user);
    Session::Stream* st = s.find(id);
    if (st == nullptr || st->handed || st->answered) return 0;
    if (st->req.body.size() + len > s.options_.limits.max_body) {
      s.error_answer(*st, 413);
      return 0;
    }
    try {
      st->req.body.append(reinterpret_cast<const char*>(data), len);
    } catch (...) {
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
  }

  static int frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    Session& s = of(user);
    switch (frame->hd.type) {
      case NGHTTP2_GOAWAY:
        s.peer_goaway_ = true;
        return 0;
      case NGHTTP2_RST_STREAM:
        ++s.stats_.resets_received;
        if (s.now_ >= s.reset_window_start_ + kResetInterval) {
          s.reset_window_start_ = s.now_;
          s.resets_in_window_ = 0;
        }
        if (++s.resets_in_window_ > s.options_.max_resets_per_second && !s.stats_.calmed) {
          s.stats_.calmed = true;
          nghttp2_session_terminate_session(s.ng_, NGHTTP2_ENHANCE_YOUR_CALM);
        }
        return 0;
      case NGHTTP2_HEADERS:
      case NGHTTP2_DATA:
        break;
      default:
        return 0;
    }
    Session::Stream* st = s.find(frame->hd.stream_id);
    if (st == nullptr || st->handed || st->answered) return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && st->too_big) {
      s.error_answer(*st, 431);
      return 0;
    }
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) return 0;
    st->handed = true;
    st->req.content_length = st->req.body.size();
    st->progress_at = s.now_;
    ++s.stats_.streams;
    try {
      s.handler_.on_request(st->id, st->req);
    } catch (...) {
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
  }

  static int stream_close(nghttp2_session*, int32_t id, uint32_t code, void* user) {
    of(user).stream_closed(id, code);
    return 0;
  }

  static ssize_t read(nghttp2_session*, int32_t id, uint8_t* buf, size_t length, uint32_t* flags,
                      nghttp2_data_source*, void* user) {
    Session& s = of(user);
    Session::Stream* st = s.find(id);
    if (st == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return s.read_body(*st, buf, length, flags);
  }
};

Session::Session(SessionHandler& handler, SessionOptions options, uint64_t now)
    : handler_(handler), options_(std::move(options)), now_(now), idle_since_(now) {
  if (!options_.read_file) options_.read_file = pread_file;
  nghttp2_session_callbacks* cb = nullptr;
  nghttp2_option* opt = nullptr;
  if (nghttp2_session_callbacks_new(&cb) != 0) throw std::bad_alloc();
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, Callbacks::begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, Callbacks::header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, Callbacks::data_chunk);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, Callbacks::frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, Callbacks::stream_close);
  if (nghttp2_option_new(&opt) != 0) {
    nghttp2_session_callbacks_del(cb);
    throw std::bad_alloc();
  }
  nghttp2_option_set_max_outbound_ack(opt, options_.max_outbound_ack);
  nghttp2_option_set_max_deflate_dynamic_table_size(opt, options_.header_table_size);
#ifdef CDN_HAVE_NGHTTP2_MAX_CONTINUATIONS
  nghttp2_option_set_max_continuations(opt, options_.max_continuations);
#endif
  const int rc = nghttp2_session_server_new2(&ng_, cb, this, opt);
  nghttp2_session_callbacks_del(cb);
  nghttp2_option_del(opt);
  if (rc != 0) throw std::bad_alloc();
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, options_.max_concurrent_streams},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
       static_cast<uint32_t>(options_.limits.max_header_bytes)},
      {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, options_.header_table_size},
  };
  nghttp2_submit_settings(ng_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
}

Session::~Session() {
  if (ng_ != nullptr) nghttp2_session_del(ng_);
}

Session::Stream* Session::find(int32_t id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second.get();
}

const Session::Stream* Session::find(int32_t id) const {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second.get();
}

void Session::fatal() {
  aborted_ = true;
  // Every stream the handler holds ends now.
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, st] : streams) {
    if (st->handed) handler_.on_stream_closed(id, false, st->body_bytes);
  }
}

void Session::receive(std::string_view data, uint64_t now) {
  if (closed() || failed_) return;
  now_ = now;
  idle_since_ = now;
  ++in_recv_;
  const ssize_t rc =
      nghttp2_session_mem_recv(ng_, reinterpret_cast<const uint8_t*>(data.data()), data.size());
  --in_recv_;
  if (rc < 0) {
    failed_ = true;  // nothing more is read, however the rest is split
    // A connection error (bad preface, protocol error, flood): GOAWAY when
    // nghttp2 can still send it (it may have queued one already), then closed.
    const bool flood = rc == NGHTTP2_ERR_FLOODED
#ifdef CDN_HAVE_NGHTTP2_MAX_CONTINUATIONS
                       || rc == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS
#endif
        ;
    if (flood) stats_.calmed = true;
    nghttp2_session_terminate_session(ng_,
                                      flood ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR);
    if (nghttp2_session_want_write(ng_) == 0) fatal();
  }
}

void Session::receive_eof(uint64_t now) {
  if (closed()) return;
  now_ = now;
  eof_ = true;
}

void Session::abort() {
  if (aborted_) return;
  fatal();
}

void Session::drain(uint64_t now) {
  if (closed() || draining_) return;
  now_ = now;
  draining_ = true;
  nghttp2_submit_goaway(ng_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(ng_),
                        NGHTTP2_NO_ERROR, nullptr, 0);
}

bool Session::closed() const {
  if (aborted_) return true;
  if (nghttp2_session_want_write(ng_) != 0) return false;
  if (failed_) return true;
  if (nghttp2_session_want_read(ng_) == 0) return true;
  return (eof_ || draining_) && streams_.empty();
}

uint64_t Session::next_deadline() const {
  if (closed()) return kNoDeadline;
  uint64_t due = kNoDeadline;
  const uint64_t send = static_cast<uint64_t>(options_.send_timeout.count());
  const uint64_t head = static_cast<uint64_t>(options_.header_timeout.count());
  if (writing_) due = std::min(due, writing_since_ + send);
  if (streams_.empty()) {
    due = std::min(due, idle_since_ + static_cast<uint64_t>(options_.idle_timeout.count()));
  }
  for (const auto& [id, st] : streams_) {
    if (!st->handed && !st->answered) due = std::min(due, st->opened_at + head);
    if (st->answered && (!st->pieces.empty())) due = std::min(due, st->progress_at + send);
  }
  return due;
}

void Session::tick(uint64_t now) {
  if (closed()) return;
  now_ = now;
  const uint64_t send = static_cast<uint64_t>(options_.send_timeout.count());
  const uint64_t head = static_cast<uint64_t>(options_.header_timeout.count());
  if (writing_ && now >= writing_since_ + send) {
    fatal();  // the client takes nothing: the connection goes
    return;
  }
  if (streams_.empty() && !draining_ &&
      now >= idle_since_ + static_cast<uint64_t>(options_.idle_timeout.count())) {
    draining_ = true;
    nghttp2_session_terminate_session(ng_, NGHTTP2_NO_ERROR);
    return;
  }
  std::vector<int32_t> late;
  for (const auto& [id, st] : streams_) {
    if ((!st->handed && !st->answered && now >= st->opened_at + head) ||
        (st->answered && !st->pieces.empty() && now >= st->progress_at + send)) {
      late.push_back(id);
    }
  }
  for (const int32_t id : late) {
    ++stats_.streams_timed_out;
    nghttp2_submit_rst_stream(ng_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    if (Stream* st = find(id)) st->pieces.clear();  // its memory goes now
  }
}

std::string Session::take_output(uint64_t now) {
  if (writing_ || aborted_) return {};
  now_ = now;
  std::string out = std::move(spare_);
  out.clear();
  while (out.size() < options_.max_output) {
    const uint8_t* p = nullptr;
    const ssize_t n = nghttp2_session_mem_send(ng_, &p);
    if (n < 0) {
      fatal();
      return {};
    }
    if (n == 0) break;
    out.append(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  }
  if (!out.empty()) {
    writing_ = true;
    writing_since_ = now;
  }
  // Streamed answers whose queue emptied may take pieces again (not from
  // inside nghttp2's read callback).
  std::vector<int32_t> ready;
  for (const auto& [id, st] : streams_) {
    if (st->answered && !st->body_done && st->pieces.empty() && st->deferred) ready.push_back(id);
  }
  for (const int32_t id : ready) {
    if (has_stream(id)) handler_.on_stream_writable(id);
  }
  return out;
}

void Session::output_done(std::string buf, uint64_t now) {
  now_ = now;
  writing_ = false;
  spare_ = std::move(buf);
  if (spare_.capacity() > 4 * options_.max_output) spare_ = std::string();
}

bool Session::submit(Stream& s, int status, std::string_view lines, bool with_body) {
  HeaderBlock block(status, lines);
  nghttp2_data_provider provider{};
  provider.read_callback = Callbacks::read;
  const int rc = nghttp2_submit_response(ng_, s.id, block.nva.data(), block.nva.size(),
                                         with_body ? &provider : nullptr);
  if (rc != 0) return false;
  s.answered = true;
  s.progress_at = now_;
  return true;
}

bool Session::interim(int32_t id, int status, std::string_view lines) {
  Stream* s = find(id);
  if (s == nullptr || s->answered || aborted_ || status < 100 || status > 199 || status == 101) {
    return false;
  }
  HeaderBlock block(status, lines);
  return nghttp2_submit_headers(ng_, NGHTTP2_FLAG_NONE, id, nullptr, block.nva.data(),
                                block.nva.size(), nullptr) >= 0;
}

bool Session::respond(int32_t id, int status, std::string_view lines, std::string_view body,
                      std::shared_ptr<const void> owner, bool head_only) {
  Stream* s = find(id);
  if (s == nullptr || s->answered || aborted_) return false;
  s->body_done = true;
  if (head_only || body.empty()) return submit(*s, status, lines, false);
  Piece p;
  if (owner) {
    p.view = body;
    p.owner = std::move(owner);
  } else {
    p.own.assign(body);
    p.view = p.own;
  }
  queue(*s, std::move(p));
  return submit(*s, status, lines, true);
}

bool Session::respond_file(int32_t id, int status, std::string_view lines, FileRange file) {
  Stream* s = find(id);
  if (s == nullptr || s->answered || aborted_) return false;
  s->body_done = true;
  if (file.length == 0) return submit(*s, status, lines, false);
  Piece p;
  p.file = std::move(file);
  queue(*s, std::move(p));
  return submit(*s, status, lines, true);
}

bool Session::respond_stream(int32_t id, int status, std::string_view lines) {
  Stream* s = find(id);
  if (s == nullptr || s->answered || aborted_) return false;
  return submit(*s, status, lines, true);
}

void Session::queue(Stream& s, Piece p) {
  if (s.pieces.empty()) s.progress_at = now_;
  if (p.file.fd < 0) {
    if (!p.own.empty()) p.view = p.own;
    s.queued += p.view.size();
  }
  s.pieces.push_back(std::move(p));
  // A std::string moved into the deque may move its small buffer: point
  // the view at the piece's own bytes where they now live.
  Piece& back = s.pieces.back();
  if (!back.own.empty()) back.view = back.own;
}

void Session::wake(Stream& s) {
  if (!s.deferred) return;
  s.deferred = false;
  nghttp2_session_resume_data(ng_, s.id);
}

bool Session::push_piece(int32_t id, std::string_view piece) {
  Stream* s = find(id);
  if (s == nullptr || !s->answered || s->body_done || aborted_) return false;
  if (s->queued + piece.size() > options_.max_stream_queue) return false;
  if (piece.empty()) return true;
  Piece p;
  p.own.assign(piece);
  queue(*s, std::move(p));
  wake(*s);
  return true;
}

bool Session::push_file(int32_t id, FileRange file) {
  Stream* s = find(id);
  if (s == nullptr || !s->answered || s->body_done || aborted_ || !s->pieces.empty()) return false;
  if (file.length == 0) return true;
  Piece p;
  p.file = std::move(file);
  queue(*s, std::move(p));
  wake(*s);
  return true;
}

bool Session::end_body(int32_t id) {
  Stream* s = find(id);
  if (s == nullptr || !s->answered || s->body_done || aborted_) return false;
  s->body_done = true;
  wake(*s);
  return true;
}

bool Session::stream_ready(int32_t id) const {
  const Stream* s = find(id);
  return s != nullptr && s->answered && !s->body_done && s->pieces.empty();
}

void Session::reset(int32_t id) {
  Stream* s = find(id);
  if (s == nullptr || aborted_) return;
  s->pieces.clear();
  nghttp2_submit_rst_stream(ng_, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
}

void Session::error_answer(Stream& s, int status) {
  if (s.answered) return;
  const std::string_view reason = http::reason_phrase(status);
  const std::string lines = "content-type: text/plain; charset=utf-8\r\ncontent-length: " +
                            std::to_string(reason.size() + 1) + "\r\n";
  s.too_big = true;
  s.body_done = true;
  Piece p;
  p.own.assign(reason).push_back('\n');
  queue(s, std::move(p));
  submit(s, status, lines, true);
}

long Session::read_body(Stream& s, uint8_t* buf, size_t length, uint32_t* flags) {
  size_t n = 0;
  while (n < length && !s.pieces.empty()) {
    Piece& p = s.pieces.front();
    if (p.file.fd >= 0) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(length - n, p.file.length));
      const long got = options_.read_file(p.file.fd, p.file.offset, buf + n, want);
      // The length promised in the head cannot be kept: the stream is reset
      // rather than end short.
      if (got <= 0) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
      p.file.offset += static_cast<uint64_t>(got);
      p.file.length -= static_cast<uint64_t>(got);
      n += static_cast<size_t>(got);
      if (p.file.length == 0) s.pieces.pop_front();
      break;  // one read per frame
    }
    const size_t take = std::min(length - n, p.view.size() - p.skip);
    std::memcpy(buf + n, p.view.data() + p.skip, take);
    p.skip += take;
    n += take;
    s.queued -= take;
    if (p.skip == p.view.size()) s.pieces.pop_front();
  }
  if (n == 0 && s.pieces.empty() && !s.body_done) {
    s.deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  if (s.pieces.empty() && s.body_done) *flags |= NGHTTP2_DATA_FLAG_EOF;
  s.progress_at = now_;
  s.body_bytes += n;
  return static_cast<long>(n);
}

void Session::stream_closed(int32_t id, uint32_t code) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  std::unique_ptr<Stream> st = std::move(it->second);
  streams_.erase(it);
  if (streams_.empty()) idle_since_ = now_;
  if (st->handed) {
    handler_.on_stream_closed(id, code == NGHTTP2_NO_ERROR && st->body_done && st->pieces.empty(),
                              st->body_bytes);
  }
}

}  // namespace cdn::http2
