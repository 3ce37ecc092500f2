// SPDX-License-Identifier: MIT
#include "daemons/replicad/origin.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>
#include <unordered_set>

#include "common/http/parser.hpp"
#include "common/text/text.hpp"

namespace cdn::replica {
namespace {

using text::iequals;
using text::trim;

// Curl's global state is set up once per process, before any transfer.
void global_init() {
  static const bool done = [] {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return true;
  }();
  (void)done;
}

// Origin field lines kept per response; beyond it the response is refused.
constexpr size_t kMaxOriginFields = 200;

}  // namespace

std::optional<std::string_view> OriginHead::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (iequals(k, name)) return std::string_view(v);
  }
  return std::nullopt;
}

struct Origin::Transfer {
  Origin* origin = nullptr;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  OriginRequest request;  // curl reads the body from here until the transfer ends
  OriginCallbacks cb;
  OriginHead head;
  uint64_t id = 0;
  bool head_done = false;
  bool refused = false;
  std::string malformed;  // why the head cannot be trusted; non-empty: transfer stopped
  // Chunked framing read here: curl frames the body but leaves the codings
  // to us (HTTP_TRANSFER_DECODING off), so that a coding it does not know
  // is read to the close (RFC 9112 6.3) instead of refused.
  std::unique_ptr<http::ChunkedDecoder> dechunk;
  bool dechunked = false;  // the last chunk and the trailers were read
  char error[CURL_ERROR_SIZE] = {0};

  ~Transfer() {
    if (easy != nullptr) curl_easy_cleanup(easy);
    if (headers != nullptr) curl_slist_free_all(headers);
  }
};

// One socket curl asked us to watch. Its poll handle is closed when curl
// says goodbye to it (and freed by its close callback); the Socket at once.
struct Origin::Socket {
  uv::Ptr<uv_poll_t> poll;
  Origin* origin = nullptr;
};

namespace {
std::unordered_set<void*>& live_sockets() {
  static std::unordered_set<void*> s;
  return s;
}
}  // namespace

Origin::Origin(uv_loop_t* loop, OriginOptions options) : loop_(loop), options_(std::move(options)) {
  global_init();
  multi_ = curl_multi_init();
  if (multi_ == nullptr) throw std::runtime_error("libcurl: cannot make a multi handle");
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &Origin::on_socket);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &Origin::on_timer);
  curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS, 64L);
  timer_ = uv::make_timer(loop_, [this] { action(CURL_SOCKET_TIMEOUT, 0); });
}

Origin::~Origin() { close(); }

void Origin::close() {
  if (closed_) return;
  closed_ = true;
  for (auto& [easy, t] : transfers_) {
    curl_multi_remove_handle(multi_, easy);
    delete t;
  }
  transfers_.clear();
  ids_.clear();
  curl_multi_cleanup(multi_);
  multi_ = nullptr;
  // Sockets curl did not say goodbye to (pooled connections): close their polls.
  for (auto it = live_sockets().begin(); it != live_sockets().end();) {
    auto* s = static_cast<Socket*>(*it);
    if (s->origin != this) {
      ++it;
      continue;
    }
    it = live_sockets().erase(it);
    delete s;  // closes its poll
  }
  timer_.reset();
}

void Origin::cancel(uint64_t id) {
  auto i = ids_.find(id);
  if (i == ids_.end()) return;
  CURL* easy = i->second;
  ids_.erase(i);
  auto it = transfers_.find(easy);
  if (it == transfers_.end()) return;
  Transfer* t = it->second;
  transfers_.erase(it);
  curl_multi_remove_handle(multi_, easy);
  delete t;
}

uint64_t Origin::fetch(OriginRequest request, OriginCallbacks callbacks) {
  auto* t = new Transfer;
  t->origin = this;
  t->request = std::move(request);
  const std::string& url = t->request.url;
  const auto& headers = t->request.headers;
  t->cb = std::move(callbacks);
  t->easy = curl_easy_init();
  if (closed_ || t->easy == nullptr) {
    delete t;
    return 0;
  }
  bool accept_encoding = false;
  for (const auto& h : headers) {
    t->headers = curl_slist_append(t->headers, h.c_str());
    // "Accept-Encoding: v", or "Accept-Encoding;" (curl's empty field).
    const std::string_view line(h);
    accept_encoding =
        accept_encoding || (line.size() > 15 && (line[15] == ':' || line[15] == ';') &&
                            text::iequals(line.substr(0, 15), "Accept-Encoding"));
  }
  // The client's coding preference, or identity; curl decodes nothing
  // (no CURLOPT_ACCEPT_ENCODING): the bytes we cache are the bytes the
  // origin sent, served with its Content-Encoding.
  if (!accept_encoding) {
    t->headers = curl_slist_append(t->headers, "Accept-Encoding: identity");
  }
  // The body is complete before it is sent: no round trip waiting for 100.
  t->headers = curl_slist_append(t->headers, "Expect:");
  CURL* e = t->easy;
  curl_easy_setopt(e, CURLOPT_URL, url.c_str());
  const std::string& method = t->request.method;
  if (method == "HEAD") {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else if (method != "GET" || !t->request.body.empty()) {
    if (!t->request.body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
      // curl would add a form Content-Type of its own to a body without one.
      const bool typed = std::any_of(headers.begin(), headers.end(), [](const std::string& h) {
        return h.size() >= 13 && iequals(std::string_view(h).substr(0, 13), "content-type:");
      });
      if (!typed) t->headers = curl_slist_append(t->headers, "Content-Type:");
      // With a length (no chunking, no "Expect: 100-continue": the body is here already).
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->request.body.data());
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                       static_cast<curl_off_t>(t->request.body.size()));
    }
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method.c_str());
  }
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
  curl_easy_setopt(e, CURLOPT_PRIVATE, t);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(e, CURLOPT_HTTP_TRANSFER_DECODING, 0L);
  curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);  // bodies are relayed as coded
  curl_easy_setopt(e, CURLOPT_USERAGENT, options_.user_agent.c_str());
  const long timeout_ms = static_cast<long>(options_.timeout.count());
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  // Averaged by curl over LOW_SPEED_TIME: a head followed by a trickle of
  // body gives up like a stall, instead of holding its waiters for ever.
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT,
                   static_cast<long>(std::clamp<uint64_t>(options_.min_rate, 1, 1ULL << 30)));
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, std::max(1L, (timeout_ms + 999) / 1000));
  if (!options_.ca_file.empty()) curl_easy_setopt(e, CURLOPT_CAINFO, options_.ca_file.c_str());
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &Origin::on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Origin::on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
  transfers_.emplace(e, t);
  t->id = ++last_id_;
  ids_.emplace(t->id, e);
  const CURLMcode rc = curl_multi_add_handle(multi_, e);
  if (rc != CURLM_OK) {
    transfers_.erase(e);
    ids_.erase(t->id);
    spdlog::error("origin fetch {}: {}", url, curl_multi_strerror(rc));
    // Report asynchronously, like every other outcome.
    auto cb = std::move(t->cb.done);
    delete t;
    OriginResult r{OriginError::Unreachable, curl_multi_strerror(rc)};
    if (cb) cb(r);
    return 0;
  }
  return t->id;
}

size_t Origin::refuse_malformed(Transfer* t, std::string_view why) {
  t->malformed = why;
  return 0;  // curl stops the transfer; check_done reports Malformed
}

size_t Origin::on_header(char* data, size_t size, size_t n, void* userp) noexcept {
  auto* t = static_cast<Transfer*>(userp);
  const size_t len = size * n;
  const std::string_view line(data, len);
  try {
    if (line.starts_with("HTTP/")) {  // a new response (after 100 Continue): start over
      t->head = OriginHead{};
      return len;
    }
    if (t->head_done) return len;  // trailer fields: not part of the stored head
    if (!line.empty() && (line.front() == ' ' || line.front() == '\t') && line != "\r\n") {
      // obs-fold continues the previous field: RFC 9112 §5.2 says replace it
      // with SP. Parsing it as a field of its own let a folded
      // " Cache-Control: max-age=31536000" override the origin's no-store.
      if (t->head.headers.empty()) return refuse_malformed(t, "obs-fold before any field");
      const std::string_view more = trim(line);
      if (!more.empty()) t->head.headers.back().second.append(" ").append(more);
      return len;
    }
    const std::string_view bare = trim(line);
    if (bare.empty()) {
      long status = 0;
      curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
      if (status >= 100 && status < 200) {
        // An interim response: 100 and 101 answer our own hop; others (103
        // Early Hints) are the client's (RFC 9110 15.2). Never stored.
        if (status >= 102 && t->cb.interim) {
          t->head.status = status;
          t->cb.interim(t->head);
        }
        t->head = OriginHead{};
        return len;
      }
      t->head.status = status;
      // RFC 9112 §6.3: CL with TE is a smuggling attempt, and curl would
      // silently pick one framing; a gateway must not store or relay either.
      if (t->head.header("Content-Length") && t->head.header("Transfer-Encoding")) {
        return refuse_malformed(t, "both Content-Length and Transfer-Encoding");
      }
      const bool bodiless = t->request.method == "HEAD" || status == 204 || status == 304;
      if (auto te = t->head.header("Transfer-Encoding"); te && !bodiless) {
        const size_t comma = te->rfind(',');
        const std::string_view last =
            trim(comma == std::string_view::npos ? *te : te->substr(comma + 1));
        if (iequals(last, "chunked")) {
          t->dechunk = std::make_unique<http::ChunkedDecoder>();
          t->dechunk->start(UINT64_MAX, 64 * 1024);
        }
      }
      t->head_done = true;
      if (t->cb.head && !t->cb.head(t->head)) {
        t->refused = true;
        return 0;
      }
      return len;
    }
    const size_t colon = bare.find(':');
    if (colon == std::string_view::npos) return refuse_malformed(t, "a field line without ':'");
    // Dropping fields past a limit would misattach a later obs-fold, so refuse instead.
    if (t->head.headers.size() >= kMaxOriginFields) return refuse_malformed(t, "too many fields");
    const std::string_view name = trim(bare.substr(0, colon));
    const std::string_view value = trim(bare.substr(colon + 1));
    if (iequals(name, "Content-Length")) {
      if (auto prev = t->head.header("Content-Length"); prev && *prev != value) {
        return refuse_malformed(t, "two different Content-Length values");
      }
    }
    t->head.headers.emplace_back(std::string(name), std::string(value));
    return len;
  } catch (...) {
    t->refused = true;
    return 0;
  }
}

size_t Origin::on_body(char* data, size_t size, size_t n, void* userp) noexcept {
  auto* t = static_cast<Transfer*>(userp);
  const size_t len = size * n;
  try {
    if (t->dechunk) {
      std::string_view in(data, len);
      while (!in.empty() && !t->dechunked) {
        const auto step = t->dechunk->next(in);
        in.remove_prefix(step.consumed);
        if (step.status == http::ChunkedDecoder::Status::Error) {
          return refuse_malformed(t, "bad chunked framing");
        }
        if (step.status == http::ChunkedDecoder::Status::Done) t->dechunked = true;
        if (step.status == http::ChunkedDecoder::Status::NeedMore) break;
        if (step.status == http::ChunkedDecoder::Status::Data && t->cb.body &&
            !t->cb.body(step.data.data(), step.data.size())) {
          t->refused = true;
          return 0;
        }
      }
      return len;
    }
    if (t->cb.body && !t->cb.body(data, len)) {
      t->refused = true;
      return 0;
    }
    return len;
  } catch (...) {
    t->refused = true;
    return 0;
  }
}

int Origin::on_socket(CURL*, curl_socket_t s, int what, void* userp, void* socketp) noexcept {
  auto* self = static_cast<Origin*>(userp);
  auto* sock = static_cast<Socket*>(socketp);
  if (what == CURL_POLL_REMOVE) {
    if (sock != nullptr) {
      live_sockets().erase(sock);
      delete sock;  // closes its poll
      curl_multi_assign(self->multi_, s, nullptr);
    }
    return 0;
  }
  if (sock == nullptr) {
    auto fresh = std::make_unique<Socket>();
    fresh->origin = self;
    // A socket error (a reset, a pooled connection the origin closed) is
    // told as readable and writable, as curl's own poll loop does: curl then
    // meets the error in recv/send, and retries a reused connection on a
    // fresh one instead of failing the transfer ("select/poll returned error").
    fresh->poll = uv::make_poll(self->loop_, s, [self, s](int status, int ev) {
      int flags = 0;
      if (status < 0) flags = CURL_CSELECT_IN | CURL_CSELECT_OUT;
      if ((ev & UV_READABLE) != 0) flags |= CURL_CSELECT_IN;
      if ((ev & UV_WRITABLE) != 0) flags |= CURL_CSELECT_OUT;
      self->action(s, flags);
    });
    if (!fresh->poll) return -1;
    sock = fresh.release();
    live_sockets().insert(sock);
    curl_multi_assign(self->multi_, s, sock);
  }
  int events = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= UV_WRITABLE;
  uv::poll_start(sock->poll.get(), events);
  return 0;
}

int Origin::on_timer(CURLM*, long timeout_ms, void* userp) noexcept {
  auto* self = static_cast<Origin*>(userp);
  if (!self->timer_) return 0;
  if (timeout_ms < 0) {
    uv_timer_stop(&self->timer_->raw);
  } else {
    uv::timer_start(self->timer_.get(), static_cast<uint64_t>(timeout_ms), 0);
  }
  return 0;
}

void Origin::action(curl_socket_t s, int flags) {
  if (closed_) return;
  int running = 0;
  curl_multi_socket_action(multi_, s, flags, &running);
  check_done();
}

void Origin::check_done() {
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL* easy = msg->easy_handle;
    const CURLcode code = msg->data.result;
    auto it = transfers_.find(easy);
    if (it == transfers_.end()) continue;
    Transfer* t = it->second;
    transfers_.erase(it);
    ids_.erase(t->id);
    curl_multi_remove_handle(multi_, easy);
    OriginResult r;
    if (code == CURLE_OK) {
      if (!t->head_done) {
        r.error = OriginError::Unreachable;
        r.message = "no response head";
      } else if (t->dechunk && !t->dechunked) {
        r.error = OriginError::Malformed;
        r.message = "chunked body cut short";
      }
    } else if (!t->malformed.empty()) {
      r.error = OriginError::Malformed;
      r.message = t->malformed;
    } else if (t->refused) {
      r.error = OriginError::Refused;
      r.message = "transfer stopped by the cache";
    } else if (code == CURLE_OPERATION_TIMEDOUT) {
      r.error = OriginError::Timeout;
      r.message = t->error[0] != 0 ? t->error : curl_easy_strerror(code);
    } else {
      r.error = OriginError::Unreachable;
      r.message = t->error[0] != 0 ? t->error : curl_easy_strerror(code);
    }
    auto done = std::move(t->cb.done);
    delete t;
    try {
      if (done) done(r);
    } catch (const std::exception& e) {
      spdlog::error("origin fetch completion failed: {}", e.what());
    }
    if (closed_) return;
  }
}

}  // namespace cdn::replica
