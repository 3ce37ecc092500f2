// SPDX-License-Identifier: MIT
// The pure HTTP/2 session, driven by an nghttp2 client session in memory and
// a fake clock.
#include "common/http2/session.hpp"

#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace cdn::http2 {
namespace {

struct Answer {
  int status = 0;
  std::map<std::string, std::string> headers;
  std::string body;
  bool closed = false;
  uint32_t error = 0;
};

// An nghttp2 client in memory.
class Client {
 public:
  explicit Client(uint32_t initial_window = 65535) {
    nghttp2_session_callbacks* cb = nullptr;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(
        cb,
        [](nghttp2_session*, const nghttp2_frame* f, const uint8_t* n, size_t nl, const uint8_t* v,
           size_t vl, uint8_t, void* u) -> int {
          auto& a = static_cast<Client*>(u)->answers[f->hd.stream_id];
          std::string name(reinterpret_cast<const char*>(n), nl);
          std::string value(reinterpret_cast<const char*>(v), vl);
          if (name == ":status") {
            a.status = std::stoi(value);
          } else {
            a.headers[name] = value;
          }
          return 0;
        });
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        cb, [](nghttp2_session*, uint8_t, int32_t id, const uint8_t* d, size_t l, void* u) -> int {
          static_cast<Client*>(u)->answers[id].body.append(reinterpret_cast<const char*>(d), l);
          return 0;
        });
    nghttp2_session_callbacks_set_on_stream_close_callback(
        cb, [](nghttp2_session*, int32_t id, uint32_t code, void* u) -> int {
          auto& a = static_cast<Client*>(u)->answers[id];
          a.closed = true;
          a.error = code;
          return 0;
        });
    nghttp2_session_callbacks_set_on_frame_recv_callback(
        cb, [](nghttp2_session*, const nghttp2_frame* f, void* u) -> int {
          auto* c = static_cast<Client*>(u);
          if (f->hd.type == NGHTTP2_GOAWAY) {
            c->goaway = true;
            c->goaway_code = f->goaway.error_code;
            c->goaway_last = f->goaway.last_stream_id;
          }
          return 0;
        });
    nghttp2_session_client_new(&ng, cb, this);
    nghttp2_session_callbacks_del(cb);
    const nghttp2_settings_entry s[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, initial_window}};
    nghttp2_submit_settings(ng, NGHTTP2_FLAG_NONE, s, 1);
  }
  ~Client() { nghttp2_session_del(ng); }

  int32_t get(std::string_view path, std::string_view method = "GET",
              std::vector<std::pair<std::string, std::string>> extra = {}) {
    std::vector<std::pair<std::string, std::string>> h = {{":method", std::string(method)},
                                                          {":path", std::string(path)},
                                                          {":scheme", "http"},
                                                          {":authority", "example.test"}};
    for (auto& e : extra) h.push_back(e);
    std::vector<nghttp2_nv> nva;
    for (auto& [n, v] : h) {
      nva.push_back({reinterpret_cast<uint8_t*>(n.data()), reinterpret_cast<uint8_t*>(v.data()),
                     n.size(), v.size(), NGHTTP2_NV_FLAG_NONE});
    }
    return nghttp2_submit_request(ng, nullptr, nva.data(), nva.size(), nullptr, nullptr);
  }

  std::string output() {
    std::string out;
    for (;;) {
      const uint8_t* p = nullptr;
      const ssize_t n = nghttp2_session_mem_send(ng, &p);
      if (n <= 0) break;
      out.append(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
    }
    return out;
  }
  void input(std::string_view b) {
    nghttp2_session_mem_recv(ng, reinterpret_cast<const uint8_t*>(b.data()), b.size());
  }

  nghttp2_session* ng = nullptr;
  std::map<int32_t, Answer> answers;
  bool goaway = false;
  uint32_t goaway_code = 0;
  int32_t goaway_last = -1;
};

// Answers as told: `answer` runs for each request (may leave it deferred).
class Handler : public SessionHandler {
 public:
  void on_request(int32_t id, const http::Request& req) override {
    requests.push_back(req);
    ids.push_back(id);
    if (answer) answer(id, req);
  }
  void on_stream_closed(int32_t id, bool whole, uint64_t bytes) override {
    closed[id] = {whole, bytes};
  }
  void on_stream_writable(int32_t id) override { writable.push_back(id); }

  Session* session = nullptr;
  std::function<void(int32_t, const http::Request&)> answer;
  std::vector<http::Request> requests;
  std::vector<int32_t> ids;
  std::map<int32_t, std::pair<bool, uint64_t>> closed;
  std::vector<int32_t> writable;
};

struct Pair {
  explicit Pair(SessionOptions o = {}, uint32_t window = 65535)
      : client(window), session(handler, std::move(o), now) {
    handler.session = &session;
  }
  // Moves bytes both ways until neither side has more.
  void pump(int rounds = 1000) {
    for (int i = 0; i < rounds; ++i) {
      const std::string c = client.output();
      if (!c.empty()) session.receive(c, now);
      std::string s = session.take_output(now);
      const bool any = !s.empty();
      if (any) {
        client.input(s);
        session.output_done(std::move(s), now);
      }
      if (c.empty() && !any) return;
    }
  }
  uint64_t now = 1000;
  Handler handler;
  Client client;
  Session session;
};

const std::string kLines = "Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n";

TEST(Http2Session, GetGoesToTheHandlerAndTheAnswerBack) {
  Pair p;
  p.handler.answer = [&](int32_t id, const http::Request&) {
    EXPECT_TRUE(p.session.respond(id, 200, kLines, "hello", nullptr, false));
  };
  const int32_t id = p.client.get("/a?x=1", "GET", {{"accept", "*/*"}});
  p.pump();
  ASSERT_EQ(p.handler.requests.size(), 1u);
  const http::Request& r = p.handler.requests[0];
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.target, "/a?x=1");
  EXPECT_EQ(r.version_major, 2);
  EXPECT_EQ(r.header("Host").value_or(""), "example.test");
  EXPECT_EQ(r.header("accept").value_or(""), "*/*");
  const Answer& a = p.client.answers[id];
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.body, "hello");
  EXPECT_EQ(a.headers.at("content-type"), "text/plain");
  EXPECT_EQ(a.headers.at("content-length"), "5");
  EXPECT_EQ(a.headers.count("connection"), 0u);  // connection-specific: dropped
  EXPECT_TRUE(a.closed);
  EXPECT_EQ(a.error, 0u);
  EXPECT_TRUE(p.handler.closed.at(id).first);
  EXPECT_EQ(p.handler.closed.at(id).second, 5u);
  EXPECT_EQ(p.session.open_streams(), 0u);
}

TEST(Http2Session, HeadHasTheHeadersAndNoBody) {
  Pair p;
  p.handler.answer = [&](int32_t id, const http::Request& r) {
    EXPECT_EQ(r.method, "HEAD");
    p.session.respond(id, 200, kLines, "hello", nullptr, true);
  };
  const int32_t id = p.client.get("/a", "HEAD");
  p.pump();
  const Answer& a = p.client.answers[id];
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.headers.at("content-length"), "5");
  EXPECT_EQ(a.body, "");
  EXPECT_TRUE(a.closed);
}

TEST(Http2Session, ManyConcurrentStreamsAnsweredLater) {
  Pair p;  // deferred: every stream is open at once
  std::vector<int32_t> ids;
  for (int i = 0; i < 80; ++i) ids.push_back(p.client.get("/s" + std::to_string(i)));
  p.pump();
  ASSERT_EQ(p.handler.ids.size(), 80u);
  EXPECT_EQ(p.session.open_streams(), 80u);
  for (size_t i = p.handler.ids.size(); i-- > 0;) {
    const std::string body = "body of " + p.handler.requests[i].target;
    EXPECT_TRUE(p.session.respond(p.handler.ids[i], 200, "", body, nullptr, false));
  }
  p.pump();
  for (int i = 0; i < 80; ++i) {
    EXPECT_EQ(p.client.answers[ids[static_cast<size_t>(i)]].body, "body of /s" + std::to_string(i));
  }
  EXPECT_EQ(p.session.open_streams(), 0u);
}

TEST(Http2Session, AdvertisesItsLimits) {
  SessionOptions o;
  o.limits.max_header_bytes = 12345;
  Pair p(o);
  p.pump();
  EXPECT_EQ(
      nghttp2_session_get_remote_settings(p.client.ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS),
      100u);
  EXPECT_EQ(nghttp2_session_get_remote_settings(p.client.ng, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE),
            12345u);
}

struct TempFile {
  explicit TempFile(const std::string& content) {
    char name[] = "/tmp/h2sessXXXXXX";
    fd = ::mkstemp(name);
    ::unlink(name);
    EXPECT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  }
  ~TempFile() { ::close(fd); }
  int fd;
};

TEST(Http2Session, FileBodyBiggerThanTheWindowIsReadInBoundedChunks) {
  std::string content(300 * 1024, '\0');
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>('a' + i % 23);
  TempFile f(content);
  SessionOptions o;
  size_t biggest = 0;
  size_t reads = 0;
  o.read_file = [&](int fd, uint64_t off, uint8_t* buf, size_t n) -> long {
    biggest = std::max(biggest, n);
    ++reads;
    return static_cast<long>(::pread(fd, buf, n, static_cast<off_t>(off)));
  };
  Pair p(o);
  p.handler.answer = [&](int32_t id, const http::Request&) {
    p.session.respond_file(id, 200, "", FileRange{f.fd, 0, content.size(), nullptr});
  };
  const int32_t id = p.client.get("/big");
  p.pump();
  EXPECT_EQ(p.client.answers[id].body.size(), content.size());
  EXPECT_TRUE(p.client.answers[id].body == content);
  EXPECT_LE(biggest, 16384u);
  EXPECT_GE(reads, content.size() / 16384);
}

TEST(Http2Session, TooBigHeadersAre431) {
  SessionOptions o;
  o.limits.max_header_bytes = 2000;
  Pair p(o);
  const int32_t id = p.client.get("/a", "GET", {{"x-big", std::string(3000, 'x')}});
  p.pump();
  EXPECT_TRUE(p.handler.requests.empty());
  EXPECT_EQ(p.client.answers[id].status, 431);
}

TEST(Http2Session, RapidResetEndsTheConnectionWithEnhanceYourCalm) {
  SessionOptions o;
  o.max_resets_per_second = 50;
  Pair p(o);
  p.pump();
  for (int i = 0; i < 200 && !p.client.goaway; ++i) {
    const int32_t id = p.client.get("/r");
    std::string bytes = p.client.output();  // the request leaves before its reset
    nghttp2_submit_rst_stream(p.client.ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    bytes += p.client.output();
    p.session.receive(bytes, p.now);
    p.pump();
  }
  EXPECT_TRUE(p.session.stats().calmed);
  EXPECT_TRUE(p.client.goaway);
  EXPECT_EQ(p.client.goaway_code, static_cast<uint32_t>(NGHTTP2_ENHANCE_YOUR_CALM));
  EXPECT_TRUE(p.session.closed());
  EXPECT_LE(p.session.stats().resets_received, 60u);
}

TEST(Http2Session, ResetsSpreadOverTimeAreFine) {
  SessionOptions o;
  o.max_resets_per_second = 50;
  Pair p(o);
  p.pump();
  for (int i = 0; i < 200; ++i) {
    const int32_t id = p.client.get("/r");
    std::string bytes = p.client.output();
    nghttp2_submit_rst_stream(p.client.ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    bytes += p.client.output();
    p.session.receive(bytes, p.now);
    p.pump();
    p.now += 100;  // 10 a second
  }
  EXPECT_EQ(p.session.stats().resets_received, 200u);
  EXPECT_FALSE(p.session.stats().calmed);
  EXPECT_FALSE(p.session.closed());
}

std::string frame(uint8_t type, uint8_t flags, uint32_t stream, std::string_view payload) {
  std::string f;
  const size_t n = payload.size();
  f.push_back(static_cast<char>(n >> 16));
  f.push_back(static_cast<char>(n >> 8));
  f.push_back(static_cast<char>(n));
  f.push_back(static_cast<char>(type));
  f.push_back(static_cast<char>(flags));
  f.push_back(static_cast<char>(stream >> 24));
  f.push_back(static_cast<char>(stream >> 16));
  f.push_back(static_cast<char>(stream >> 8));
  f.push_back(static_cast<char>(stream));
  f.append(payload);
  return f;
}

TEST(Http2Session, ContinuationFloodIsCut) {
  Pair p;
  std::string in(kPreface);
  in += frame(4, 0, 0, "");                    // SETTINGS
  in += frame(1, 0, 1, "\x82\x84\x86");        // HEADERS GET / http, no END_HEADERS
  const std::string lit("\x40\x01x\x01y", 5);  // one small literal field per frame
  for (int i = 0; i < 2000; ++i) in += frame(9, 0, 1, lit);
  p.session.receive(in, p.now);
  std::string out = p.session.take_output(p.now);
  EXPECT_TRUE(p.handler.requests.empty());
  p.session.output_done(std::move(out), p.now);
  out = p.session.take_output(p.now);
  EXPECT_TRUE(p.session.closed());
}

TEST(Http2Session, GoawayOnDrainThenCloseWhenStreamsFinish) {
  Pair p;
  const int32_t id = p.client.get("/slow");
  p.pump();
  ASSERT_EQ(p.handler.ids.size(), 1u);
  p.session.drain(p.now);
  p.pump();
  EXPECT_TRUE(p.client.goaway);
  EXPECT_EQ(p.client.goaway_code, 0u);
  EXPECT_EQ(p.client.goaway_last, id);
  EXPECT_FALSE(p.session.closed());  // the stream under way is still answered
  p.session.respond(id, 200, "", "late", nullptr, false);
  p.pump();
  EXPECT_EQ(p.client.answers[id].body, "late");
  EXPECT_TRUE(p.session.closed());
}

TEST(Http2Session, IdleTimeoutWithAFakeClock) {
  SessionOptions o;
  o.idle_timeout = std::chrono::milliseconds(5000);
  Pair p(o);
  p.pump();
  EXPECT_EQ(p.session.next_deadline(), p.now + 5000);
  p.session.tick(p.now + 4999);
  EXPECT_FALSE(p.session.closed());
  p.now += 5000;
  p.session.tick(p.now);
  p.pump();
  EXPECT_TRUE(p.client.goaway);
  EXPECT_TRUE(p.session.closed());
  // A closed session does nothing more.
  EXPECT_EQ(p.session.next_deadline(), Session::kNoDeadline);
  p.session.tick(p.now + 100000);
  EXPECT_TRUE(p.session.take_output(p.now).empty());
}

TEST(Http2Session, AWindowThatNeverOpensResetsTheStream) {
  SessionOptions o;
  o.send_timeout = std::chrono::milliseconds(3000);
  Pair p(o, /*window=*/0);
  const std::string body(100000, 'z');
  p.handler.answer = [&](int32_t id, const http::Request&) {
    p.session.respond(id, 200, "", body, nullptr, false);
  };
  const int32_t id = p.client.get("/stall");
  p.pump();
  EXPECT_EQ(p.client.answers[id].status, 200);
  EXPECT_EQ(p.client.answers[id].body, "");
  EXPECT_LE(p.session.next_deadline(), p.now + 3000);
  p.now += 3000;
  p.session.tick(p.now);
  p.pump();
  EXPECT_TRUE(p.client.answers[id].closed);
  EXPECT_EQ(p.client.answers[id].error, static_cast<uint32_t>(NGHTTP2_CANCEL));
  EXPECT_EQ(p.session.stats().streams_timed_out, 1u);
  EXPECT_FALSE(p.handler.closed.at(id).first);
  EXPECT_EQ(p.session.open_streams(), 0u);
}

TEST(Http2Session, AHeadThatNeverEndsIsReset) {
  SessionOptions o;
  o.header_timeout = std::chrono::milliseconds(2000);
  Pair p(o);
  // HEADERS without END_STREAM: a body is announced and never comes.
  p.pump();
  std::string in = frame(1, 0x4, 1, std::string("\x83\x84\x86\x01\x09localhost", 14));
  p.session.receive(in, p.now);
  const int32_t id = 1;
  p.pump();
  EXPECT_EQ(p.session.open_streams(), 1u);
  p.now += 2000;
  p.session.tick(p.now);
  std::string out = p.session.take_output(p.now);
  EXPECT_NE(out.find(frame(3, 0, id, std::string("\0\0\0\x08", 4))), std::string::npos);
  EXPECT_EQ(p.session.stats().streams_timed_out, 1u);
  EXPECT_EQ(p.session.open_streams(), 0u);
  EXPECT_TRUE(p.handler.requests.empty());
}

TEST(Http2Session, StreamedAnswerInPieces) {
  Pair p;
  const int32_t id = p.client.get("/events");
  p.pump();
  ASSERT_TRUE(p.session.respond_stream(id, 200, "Content-Type: text/event-stream\r\n"));
  p.pump();
  EXPECT_TRUE(p.session.stream_ready(id));
  EXPECT_TRUE(p.session.push_piece(id, "one\n"));
  p.pump();
  EXPECT_TRUE(p.session.push_piece(id, "two\n"));
  EXPECT_FALSE(p.session.push_piece(id, std::string(100 * 1024, 'x')));  // over the queue bound
  EXPECT_TRUE(p.session.end_body(id));
  p.pump();
  EXPECT_EQ(p.client.answers[id].body, "one\ntwo\n");
  EXPECT_TRUE(p.client.answers[id].closed);
  EXPECT_FALSE(p.handler.writable.empty());
}

// After the client's GOAWAY no new stream is served, whether the bytes come
// in one piece or one byte at a time.
TEST(Http2Session, NoNewStreamAfterTheClientsGoawayHoweverSplit) {
  std::string in(kPreface);
  in += frame(4, 0, 0, "");
  in += frame(7, 0, 0, std::string("\0\0\0\0\0\0\0\0", 8));  // GOAWAY last 0, NO_ERROR
  in += frame(1, 0x5, 1, "\x82\x84\x86");                    // HEADERS END_STREAM|END_HEADERS
  for (const bool bytewise : {false, true}) {
    Pair p;
    p.handler.answer = [&](int32_t id, const http::Request&) {
      p.session.respond(id, 200, "", "x", nullptr, false);
    };
    if (bytewise) {
      for (char c : in) p.session.receive(std::string_view(&c, 1), p.now);
    } else {
      p.session.receive(in, p.now);
    }
    EXPECT_TRUE(p.handler.requests.empty()) << bytewise;
  }
}

}  // namespace
}  // namespace cdn::http2
