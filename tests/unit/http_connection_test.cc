// SPDX-License-Identifier: MIT
// http::ServerConnection driven without sockets: scripted byte splits (whole,
// two pieces, byte by byte), a fake transport that carries out the output
// plans, and a fake clock.
#include "common/http/connection.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tests/unit/count_allocations.hpp"

namespace cdn::http {
namespace {

using namespace std::chrono_literals;
using State = ServerConnection::State;

enum class Split { Whole, Two, Bytes };
const Split kSplits[] = {Split::Whole, Split::Two, Split::Bytes};

std::string name(Split s) {
  return s == Split::Whole ? "whole" : s == Split::Two ? "two pieces" : "byte by byte";
}

size_t count(std::string_view hay, std::string_view needle) {
  size_t n = 0;
  for (size_t at = hay.find(needle); at != std::string_view::npos; at = hay.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

// Records the requests and answers each one as `answer` says (by default at
// once: 200 with "body of <target>").
struct Handler : ConnectionHandler {
  ServerConnection* conn = nullptr;
  std::vector<std::string> seen;  // "seq METHOD target"
  std::vector<uint64_t> seqs;
  std::function<void(uint64_t, const Request&)> answer;
  bool quiet = false;  // records nothing (allocation counts)

  void on_request(uint64_t seq, const Request& req) override {
    if (quiet) {
      answer(seq, req);
      return;
    }
    seen.push_back(std::to_string(seq) + " " + req.method + " " + req.target);
    seqs.push_back(seq);
    if (answer) {
      answer(seq, req);
    } else {
      ok(seq, req.target);
    }
  }
  std::string_view common_headers() override { return "Date: D\r\nServer: t\r\n"; }
  std::vector<std::string> errors;  // "status method" of the connection's own answers
  void on_error_answer(int status) override {
    errors.push_back(std::to_string(status) + " " + conn->request().method);
  }

  bool ok(uint64_t seq, std::string_view target) {
    const std::string body = "body of " + std::string(target);
    HeadWriter* h = conn->begin(seq, 200);
    if (h == nullptr) return false;
    h->header("Content-Length", static_cast<uint64_t>(body.size()));
    return conn->finish(seq, body);
  }
};

// The transport: what the client received, write units under way (their
// bytes read only when done, so a piece that moved or died shows), files.
struct Wire {
  std::string got;
  std::vector<std::vector<std::string_view>> units;
  std::map<int, std::string> files;
  bool last_seen = false;

  // Sends everything the plans show, as a socket with room would.
  void flush(ServerConnection& c, uint64_t now) {
    for (OutputPlan p = c.plan(); p.kind != OutputPlan::Kind::None; p = c.plan()) {
      last_seen = last_seen || p.last;
      if (p.kind == OutputPlan::Kind::Bytes) {
        for (size_t i = 0; i < p.nbufs; ++i) got.append(p.bufs[i]);
        c.advance(p.bytes, 0, now);
      } else {
        got.append(files.at(p.fd).substr(p.offset, p.length));
        c.advance(p.length, 0, now);
      }
    }
  }
  // Hands every byte plan over as one asynchronous write (a full socket).
  void hand(ServerConnection& c, uint64_t now) {
    const OutputPlan p = c.plan();
    if (p.kind != OutputPlan::Kind::Bytes) return;
    units.emplace_back(p.bufs.begin(), p.bufs.begin() + static_cast<long>(p.nbufs));
    c.advance(0, p.bytes, now);
  }
  void complete(ServerConnection& c, uint64_t now) {
    for (auto v : units.front()) got.append(v);
    units.erase(units.begin());
    c.write_done(now);
  }
};

struct Fixture : ::testing::Test {
  ConnectionOptions options;
  Handler handler;
  Wire wire;
  ConnectionStats stats;
  uint64_t now = 1000;
  std::unique_ptr<ServerConnection> conn;

  // A fresh connection (and client) for the next case of a test.
  void reopen() {
    wire = {};
    handler.seen.clear();
    open();
  }
  void open() {
    conn = std::make_unique<ServerConnection>(handler, options, now, &stats);
    handler.conn = conn.get();
  }
  // Plays the adapter: feeds `input` in the split's pieces (never more than
  // read_budget()), sends all output at once, resumes whenever asked.
  void run(std::string_view input, Split split) {
    size_t at = 0;
    for (int guard = 0; guard < 1'000'000; ++guard) {
      wire.flush(*conn, now);
      if (conn->wants_resume()) {
        conn->resume(now);
        continue;
      }
      const size_t budget = conn->read_budget();
      if (at == input.size() || budget == 0) break;
      size_t piece = input.size() - at;
      if (split == Split::Two) piece = at == 0 ? std::max<size_t>(1, input.size() / 2) : piece;
      if (split == Split::Bytes) piece = 1;
      piece = std::min(piece, budget);
      conn->receive(input.substr(at, piece), now);
      at += piece;
    }
    wire.flush(*conn, now);
  }
};

constexpr std::string_view kGetA = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
constexpr std::string_view kGetB = "GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
constexpr std::string_view kGetC = "GET /c HTTP/1.1\r\nHost: h\r\n\r\n";

TEST_F(Fixture, AnswersOneRequestInEverySplit) {
  for (Split s : kSplits) {
    SCOPED_TRACE(name(s));
    reopen();
    run(kGetA, s);
    ASSERT_EQ(handler.seen, std::vector<std::string>{"1 GET /a"});
    EXPECT_EQ(wire.got,
              "HTTP/1.1 200 OK\r\nDate: D\r\nServer: t\r\nContent-Length: 10\r\n\r\nbody of /a");
    EXPECT_EQ(conn->state(), State::Idle);
    EXPECT_FALSE(wire.last_seen);
  }
}

TEST_F(Fixture, PipelinedRequestsAreAnsweredInOrder) {
  for (Split s : kSplits) {
    SCOPED_TRACE(name(s));
    reopen();
    run(std::string(kGetA) + std::string(kGetB) + std::string(kGetC), s);
    EXPECT_EQ(handler.seen, (std::vector<std::string>{"1 GET /a", "2 GET /b", "3 GET /c"}));
    const size_t a = wire.got.find("body of /a"), b = wire.got.find("body of /b"),
                 c = wire.got.find("body of /c");
    ASSERT_NE(c, std::string::npos);
    EXPECT_LT(a, b);
    EXPECT_LT(b, c);
    EXPECT_EQ(stats.requests_total, 3u * (static_cast<unsigned>(s) + 1));
  }
}

TEST_F(Fixture, AnswersABoundedShareOfPipelinedRequestsPerTurn) {
  options.max_answers_per_turn = 32;
  open();
  std::string input;
  for (int i = 0; i < 40; ++i) input += kGetA;
  conn->receive(input, now);
  EXPECT_EQ(handler.seen.size(), 32u);
  EXPECT_TRUE(conn->turn_spent());
  EXPECT_TRUE(conn->wants_resume());
  EXPECT_EQ(conn->read_budget(), 0u);  // the rest waits, read already
  wire.flush(*conn, now);
  conn->resume(now);
  EXPECT_EQ(handler.seen.size(), 40u);
  EXPECT_FALSE(conn->wants_resume());
  EXPECT_GT(conn->read_budget(), 0u);
}

TEST_F(Fixture, HoldsBoundedInputAndOutputForAClientThatDoesNotRead) {
  open();
  EXPECT_EQ(conn->read_budget(), options.max_input);
  std::string input;
  for (int i = 0; i < 20000; ++i) input += kGetA;
  // The client sends as fast as it may, and never reads: every write stays
  // under way.
  size_t taken = 0;
  for (int round = 0; round < 100000; ++round) {
    wire.hand(*conn, now);
    if (conn->wants_resume()) {
      conn->resume(now);
      continue;
    }
    const size_t piece = std::min<size_t>(conn->read_budget(), 1000);
    if (piece == 0) break;
    conn->receive(std::string_view(input).substr(taken, piece), now);
    taken += piece;
  }
  EXPECT_TRUE(conn->output_full());
  EXPECT_FALSE(conn->wants_resume());
  EXPECT_EQ(conn->read_budget(), 0u);
  EXPECT_LE(conn->write_units(), options.max_writes);
  EXPECT_LE(conn->queued(), options.max_queued + options.max_output);
  EXPECT_LE(taken - handler.seen.size() * kGetA.size(), options.max_input);
  const size_t answered = handler.seen.size();
  EXPECT_LT(taken, input.size() / 2);
  // The client reads: the waiting requests are taken, then the rest.
  while (!wire.units.empty()) wire.complete(*conn, now);
  run(std::string_view(input).substr(taken), Split::Whole);
  EXPECT_GT(handler.seen.size(), answered);
  EXPECT_EQ(handler.seen.size(), 20000u);
  EXPECT_EQ(count(wire.got, "HTTP/1.1 200"), 20000u);
}

// Steady state on a kept-alive connection: no allocation per request, for
// answers sent at once, gathered behind a write under way, or pipelined.
TEST_F(Fixture, KeepAliveAnswersAllocateNothing) {
  open();
  handler.quiet = true;
  auto body = std::make_shared<std::string>(20000, 'b');
  handler.answer = [&](uint64_t seq, const Request& req) {
    conn->begin(seq, 200)->header("Content-Length", 5);
    if (req.target == "/b") {
      conn->finish(seq, *body, body);
    } else {
      conn->finish(seq, "hello");
    }
  };
  const std::string pipelined = [] {
    std::string p;
    for (int i = 0; i < 20; ++i) p += i % 2 ? kGetA : kGetB;
    return p;
  }();
  auto send_all = [&] {
    for (OutputPlan p = conn->plan(); p.kind != OutputPlan::Kind::None; p = conn->plan()) {
      conn->advance(p.bytes, 0, now);
    }
  };
  uint64_t warm = 0;
  for (int i = 0; i < 300; ++i) {
    if (i == 30) warm = tl_allocations;
    conn->receive(i % 2 ? kGetA : kGetB, now);
    if (i % 3 == 0) {
      // The socket is full: the answer is a write under way, the next one gathers behind it.
      const OutputPlan p = conn->plan();
      conn->advance(0, p.bytes, now);
      conn->receive(kGetA, now);
      conn->write_done(now);
    }
    send_all();
    if (i % 10 == 0) {
      conn->receive(pipelined, now);
      send_all();
      while (conn->wants_resume()) {
        conn->proceed(now);
        send_all();
      }
    }
  }
  EXPECT_EQ(tl_allocations - warm, 0u);
  EXPECT_EQ(conn->state(), State::Idle);
  EXPECT_EQ(conn->queued(), 0u);
}

// A connection that answers one request allocates its request-side block
// (the parser inside) and what the parser does (taken with the first byte),
// the block of its output slots (taken with the first answer: a connection
// that never asks holds neither) and one buffer for its output: the head is
// built in it and handed over.
TEST_F(Fixture, OneAnswerAllocatesOneOutputBuffer) {
  handler.quiet = true;
  handler.answer = [&](uint64_t seq, const Request&) {
    handler.conn->begin(seq, 200)->header("Content-Length", 5);
    handler.conn->finish(seq, "hello");
  };
  const std::string req = "GET /a HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nConnection: close\r\n\r\n";
  uint64_t before = tl_allocations;
  for (int i = 0; i < 10; ++i) {
    RequestParser parser(options.limits);
    // No reset: after the last answer of a connection the core keeps it.
    ASSERT_EQ(parser.feed(req).status, ParseStatus::Complete);
  }
  const uint64_t parsing = tl_allocations - before;
  before = tl_allocations;
  for (int i = 0; i < 10; ++i) {
    ServerConnection c(handler, options, now);
    handler.conn = &c;
    c.receive(req, now);
    const OutputPlan p = c.plan();
    ASSERT_EQ(p.nbufs, 1u);
    c.advance(p.bytes, 0, now);
    ASSERT_TRUE(c.closed());
  }
  EXPECT_EQ(tl_allocations - before, parsing + 30u);
}

// An open connection that has sent nothing (an idle TLS or keep-alive
// client before its first request) costs its object and nothing more.
TEST_F(Fixture, AConnectionThatNeverAsksAllocatesNothing) {
  const uint64_t before = tl_allocations;
  {
    ServerConnection c(handler, options, now);
    EXPECT_EQ(c.plan().kind, OutputPlan::Kind::None);
    c.tick(now + 1000);
  }
  EXPECT_EQ(tl_allocations - before, 0u);
}

TEST_F(Fixture, GathersSmallAnswersBehindAWriteUnderWay) {
  open();
  conn->receive(kGetA, now);
  wire.hand(*conn, now);  // the first answer is stuck in the kernel
  conn->receive(kGetB, now);
  conn->receive(kGetC, now);
  EXPECT_EQ(conn->plan().kind, OutputPlan::Kind::None);  // gathering
  wire.complete(*conn, now);
  const OutputPlan p = conn->plan();
  ASSERT_EQ(p.kind, OutputPlan::Kind::Bytes);
  EXPECT_EQ(p.nbufs, 1u);  // both answers in one buffer
  wire.flush(*conn, now);
  EXPECT_NE(wire.got.find("body of /c"), std::string::npos);
}

TEST_F(Fixture, ALateAnswerForAnEarlierRequestIsRefused) {
  open();
  std::vector<uint64_t> deferred;
  handler.answer = [&](uint64_t seq, const Request&) { deferred.push_back(seq); };
  conn->receive(std::string(kGetA) + std::string(kGetB), now);
  ASSERT_EQ(deferred, std::vector<uint64_t>{1});  // request 2 waits behind 1
  EXPECT_EQ(conn->state(), State::Handling);
  EXPECT_TRUE(handler.ok(1, "/a"));
  EXPECT_TRUE(conn->wants_resume());  // not taken from inside the answer
  EXPECT_EQ(deferred.size(), 1u);
  conn->resume(now);
  ASSERT_EQ(deferred, (std::vector<uint64_t>{1, 2}));
  // Request 1's answer arrives again (say, a second origin reply): refused.
  EXPECT_EQ(conn->begin(1, 200), nullptr);
  EXPECT_FALSE(conn->finish(1, "late"));
  EXPECT_FALSE(conn->reply(1, 200, "late"));
  EXPECT_FALSE(conn->fail(1, 500));
  EXPECT_TRUE(handler.ok(2, "/b"));
  wire.flush(*conn, now);
  EXPECT_EQ(count(wire.got, "HTTP/1.1 200"), 2u);
  EXPECT_EQ(wire.got.find("late"), std::string::npos);
  EXPECT_LT(wire.got.find("body of /a"), wire.got.find("body of /b"));
  EXPECT_FALSE(handler.ok(2, "/b"));  // answered already
}

TEST_F(Fixture, HalfCloseAnswersWhatArrivedThenCloses) {
  for (Split s : kSplits) {
    SCOPED_TRACE(name(s));
    reopen();
    run(std::string(kGetA) + std::string(kGetB), s);
    conn->receive_eof(now);
    wire.flush(*conn, now);
    EXPECT_EQ(handler.seen.size(), 2u);
    EXPECT_EQ(conn->state(), State::Closed);
  }
  // Requests still waiting when the FIN comes: answered, the last says close.
  open();
  handler.answer = [](uint64_t, const Request&) {};
  wire = {};
  conn->receive(std::string(kGetA) + std::string(kGetB), now);
  conn->receive_eof(now);
  EXPECT_TRUE(handler.ok(1, "/a"));
  conn->resume(now);
  EXPECT_TRUE(handler.ok(2, "/b"));
  wire.flush(*conn, now);
  EXPECT_EQ(count(wire.got, "Connection: close"), 1u);
  EXPECT_GT(wire.got.find("Connection: close"), wire.got.find("body of /a"));
  EXPECT_TRUE(wire.last_seen);
  EXPECT_TRUE(conn->closed());
}

TEST_F(Fixture, HalfCloseMidHeadClosesWithoutAnswer) {
  open();
  conn->receive("GET /a HTTP/1.1\r\nHo", now);
  conn->receive_eof(now);
  EXPECT_TRUE(conn->closed());
  EXPECT_TRUE(handler.seen.empty());
  EXPECT_EQ(conn->plan().kind, OutputPlan::Kind::None);
}

TEST_F(Fixture, KeepAliveLimitClosesAfterTheLastAllowedRequest) {
  options.max_requests = 2;
  open();
  run(std::string(kGetA) + std::string(kGetB) + std::string(kGetC), Split::Whole);
  EXPECT_EQ(handler.seen.size(), 2u);
  EXPECT_EQ(count(wire.got, "Connection: close"), 1u);
  EXPECT_GT(wire.got.find("Connection: close"), wire.got.find("body of /a"));
  EXPECT_TRUE(conn->closed());
}

TEST_F(Fixture, ConnectionCloseAndHttp10) {
  open();
  run("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", Split::Whole);
  EXPECT_NE(wire.got.find("Connection: keep-alive\r\n"), std::string::npos);
  EXPECT_EQ(conn->state(), State::Idle);
  run("GET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
      Split::Whole);
  EXPECT_EQ(handler.seen.size(), 2u);
  EXPECT_NE(wire.got.find("Connection: close\r\n"), std::string::npos);
  EXPECT_TRUE(conn->closed());
  // Bytes after the last request were unread: no waiting for the FIN.
  EXPECT_FALSE(wire.last_seen);
}

TEST_F(Fixture, AskedToCloseTheLastDataMayWaitForTheFin) {
  open();
  conn->receive("GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", now);
  const OutputPlan p = conn->plan();
  EXPECT_TRUE(p.last);
  wire.flush(*conn, now);
  EXPECT_TRUE(conn->closed());
}

TEST_F(Fixture, DrainClosesIdleAtOnceAndBusyAfterItsAnswer) {
  open();
  run(kGetA, Split::Whole);
  conn->drain(now);
  EXPECT_TRUE(conn->closed());

  reopen();
  handler.answer = [](uint64_t, const Request&) {};
  conn->receive(kGetA, now);
  conn->drain(now);
  EXPECT_FALSE(conn->closed());
  EXPECT_TRUE(handler.ok(1, "/a"));
  wire.flush(*conn, now);
  EXPECT_NE(wire.got.find("Connection: close"), std::string::npos);
  EXPECT_TRUE(conn->closed());
}

TEST_F(Fixture, HeaderTimeoutAnswers408AndCannotBeStretched) {
  options.header_timeout = 10s;
  open();
  const std::string head = "GET /a HTTP/1.1\r\nHost: h\r\n";
  for (size_t i = 0; i < head.size(); ++i) {
    conn->receive(head.substr(i, 1), now);
    now += 300;  // a byte every 300 ms: still within 10 s each
    conn->tick(now);
  }
  // 28 bytes, 8.4 s in: still waiting; the deadline counts from the first byte.
  EXPECT_EQ(conn->next_deadline(), 1000u + 10'000u);
  now = conn->next_deadline() - 1;
  conn->tick(now);
  EXPECT_EQ(conn->state(), State::Head);
  now += 1;
  conn->tick(now);
  wire.flush(*conn, now);
  EXPECT_EQ(wire.got.rfind("HTTP/1.1 408 Request Timeout\r\n", 0), 0u);
  EXPECT_TRUE(conn->closed());
  EXPECT_EQ(stats.errors_total, 1u);
}

TEST_F(Fixture, IdleTimeoutClosesAQuietConnection) {
  options.header_timeout = 10s;
  options.idle_timeout = 60s;
  open();
  // Before the first request: header_timeout counts from the accept.
  EXPECT_EQ(conn->next_deadline(), now + 10'000);
  now += 2'000;
  run(kGetA, Split::Whole);
  EXPECT_EQ(conn->next_deadline(), now + 60'000);
  now += 59'999;
  conn->tick(now);
  EXPECT_FALSE(conn->closed());
  now += 1;
  conn->tick(now);
  EXPECT_TRUE(conn->closed());
  EXPECT_EQ(count(wire.got, "HTTP/1.1"), 1u);  // nothing sent for an idle close
}

TEST_F(Fixture, SendTimeoutCountsFromTheLastProgress) {
  options.send_timeout = 5s;
  open();
  handler.answer = [&](uint64_t seq, const Request&) {
    conn->begin(seq, 200)->header("Content-Length", 20000);
    conn->finish(seq, std::string(20000, 'x'));
  };
  conn->receive(kGetA, now);
  wire.hand(*conn, now);
  EXPECT_EQ(conn->next_deadline(), now + 5'000);
  now += 4'000;
  wire.complete(*conn, now);  // progress
  conn->receive(kGetB, now);
  wire.hand(*conn, now);
  now += 4'999;
  conn->tick(now);
  EXPECT_FALSE(conn->closed());
  now += 1;
  conn->tick(now);
  EXPECT_TRUE(conn->closed());
  EXPECT_EQ(conn->plan().kind, OutputPlan::Kind::None);
  wire.complete(*conn, now);  // the cancelled write still comes back
  EXPECT_EQ(conn->write_units(), 0u);
}

TEST_F(Fixture, ExpectContinueIsAnsweredOnceBeforeTheBody) {
  options.limits.max_body = 100;
  const std::string head =
      "POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n";
  for (Split s : kSplits) {
    SCOPED_TRACE(name(s));
    reopen();
    run(head, s);
    EXPECT_EQ(wire.got, "HTTP/1.1 100 Continue\r\n\r\n");
    EXPECT_TRUE(handler.seen.empty());
    run("hello", s);
    EXPECT_EQ(handler.seen, std::vector<std::string>{"1 POST /up"});
    EXPECT_EQ(count(wire.got, "100 Continue"), 1u);
    EXPECT_NE(wire.got.find("HTTP/1.1 200 OK"), std::string::npos);
  }
  // The body came with the head: no 100 needed.
  reopen();
  run(head + "hello", Split::Whole);
  EXPECT_EQ(count(wire.got, "100 Continue"), 0u);
  EXPECT_EQ(count(wire.got, "200 OK"), 1u);
}

TEST_F(Fixture, ExpectationsRefused) {
  options.limits.max_body = 100;
  open();
  run("POST /up HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\nContent-Length: 5\r\n\r\n", Split::Whole);
  EXPECT_EQ(wire.got.rfind("HTTP/1.1 417 ", 0), 0u);
  EXPECT_TRUE(conn->closed());
  EXPECT_TRUE(handler.seen.empty());
  // A body over the limit: 413, and no 100 Continue that would invite it.
  reopen();
  run("POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 500\r\n\r\n",
      Split::Whole);
  EXPECT_EQ(wire.got.rfind("HTTP/1.1 413 ", 0), 0u);
  EXPECT_TRUE(conn->closed());
  // HTTP/1.0 has no expectations: ignored.
  reopen();
  run("POST /up HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n", Split::Whole);
  EXPECT_EQ(wire.got, "");
  run("ok", Split::Whole);
  EXPECT_EQ(wire.got.rfind("HTTP/1.1 200 ", 0), 0u);
}

TEST_F(Fixture, HeadAnswersCarryNoBody) {
  open();
  auto released = std::make_shared<int>(0);
  handler.answer = [&](uint64_t seq, const Request& req) {
    conn->begin(seq, 200)->header("Content-Length", 5);
    if (req.target == "/file") {
      EXPECT_TRUE(conn->finish_file(seq, FileRange{7, 0, 5, released}));
    } else {
      conn->finish(seq, "hello");
    }
  };
  run("HEAD /a HTTP/1.1\r\nHost: h\r\n\r\nHEAD /file HTTP/1.1\r\nHost: h\r\n\r\n", Split::Whole);
  EXPECT_EQ(handler.seen.size(), 2u);
  EXPECT_EQ(count(wire.got, "Content-Length: 5\r\n\r\nHTTP"), 1u);
  EXPECT_EQ(wire.got.find("hello"), std::string::npos);
  EXPECT_TRUE(wire.got.ends_with("Content-Length: 5\r\n\r\n"));
  EXPECT_EQ(released.use_count(), 1);  // the file's owner was let go at once
}

TEST_F(Fixture, StreamsChunkedPiecesAndRefusesThemWhenTheClientStopsReading) {
  open();
  handler.answer = [](uint64_t, const Request&) {};
  conn->receive(std::string(kGetA) + std::string(kGetB), now);
  conn->begin(1, 200);
  ASSERT_TRUE(conn->start_stream(1));
  EXPECT_EQ(conn->state(), State::Streaming);
  EXPECT_TRUE(conn->send_piece(1, "event one"));
  wire.flush(*conn, now);
  EXPECT_TRUE(conn->send_piece(1, "two"));
  wire.hand(*conn, now);  // stuck in the kernel
  EXPECT_FALSE(conn->send_piece(1, "three"));
  wire.complete(*conn, now);
  EXPECT_TRUE(conn->end_stream(1));
  EXPECT_FALSE(conn->send_piece(1, "after"));
  conn->resume(now);
  EXPECT_EQ(handler.seqs, (std::vector<uint64_t>{1, 2}));
  wire.flush(*conn, now);
  EXPECT_NE(
      wire.got.find("Transfer-Encoding: chunked\r\n\r\n9\r\nevent one\r\n3\r\ntwo\r\n0\r\n\r\n"),
      std::string::npos);
  // HEAD: the head alone ends the answer.
  reopen();
  conn->receive("HEAD /s HTTP/1.1\r\nHost: h\r\n\r\n", now);
  conn->begin(1, 200);
  EXPECT_TRUE(conn->start_stream(1));
  EXPECT_FALSE(conn->send_piece(1, "x"));
  EXPECT_EQ(conn->state(), State::Idle);
}

// Read-while-writer: file pieces of a growing body, one at a time (the next
// only once the one before was handed over), with a Content-Length or chunked;
// a cut stream closes without the terminating chunk.
TEST_F(Fixture, StreamsFilePiecesOneAtATime) {
  wire.files[7] = "0123456789";
  open();
  handler.answer = [](uint64_t, const Request&) {};
  conn->receive(std::string(kGetA) + std::string(kGetB), now);
  conn->begin(1, 200)->header("Content-Length", uint64_t{10});
  ASSERT_TRUE(conn->start_stream(1, /*chunked=*/false));
  EXPECT_TRUE(conn->stream_ready());
  EXPECT_TRUE(conn->send_file_piece(1, FileRange{7, 0, 4, nullptr}));
  EXPECT_FALSE(conn->stream_ready());  // the piece is not handed over yet
  EXPECT_FALSE(conn->send_file_piece(1, FileRange{7, 4, 6, nullptr}));
  wire.flush(*conn, now);
  EXPECT_TRUE(conn->stream_ready());
  EXPECT_TRUE(conn->send_file_piece(1, FileRange{7, 4, 6, nullptr}));
  wire.flush(*conn, now);
  EXPECT_TRUE(conn->end_stream(1));
  conn->resume(now);
  wire.flush(*conn, now);
  EXPECT_TRUE(wire.got.ends_with("Content-Length: 10\r\n\r\n0123456789"));
  EXPECT_EQ(wire.got.find("chunked"), std::string::npos);
  EXPECT_EQ(handler.seqs, (std::vector<uint64_t>{1, 2}));  // the next request went on

  reopen();
  wire.files[7] = "0123456789";
  conn->receive(kGetA, now);
  conn->begin(1, 200);
  ASSERT_TRUE(conn->start_stream(1));
  EXPECT_TRUE(conn->send_file_piece(1, FileRange{7, 2, 3, nullptr}));
  wire.flush(*conn, now);
  EXPECT_TRUE(conn->fail(1, 502));  // the origin broke off
  wire.flush(*conn, now);
  EXPECT_TRUE(wire.got.ends_with("chunked\r\n\r\n3\r\n234\r\n"));
  EXPECT_TRUE(conn->closed());
}

TEST_F(Fixture, SendsFilesWithSendfileAndHoldsTheNextRequestBack) {
  open();
  wire.files[9] = "0123456789abcdefghij";
  auto owner = std::make_shared<int>(0);
  handler.answer = [&](uint64_t seq, const Request& req) {
    if (req.target == "/a") {
      conn->begin(seq, 200)->header("Content-Length", 10);
      conn->finish_file(seq, FileRange{9, 5, 10, owner});
    } else {
      handler.ok(seq, req.target);
    }
  };
  conn->receive(std::string(kGetA) + std::string(kGetB), now);
  EXPECT_EQ(handler.seen.size(), 1u);  // a file under way holds request 2 back
  OutputPlan p = conn->plan();
  ASSERT_EQ(p.kind, OutputPlan::Kind::Bytes);
  EXPECT_TRUE(p.more);  // the head leaves with the file's first bytes
  const size_t head = p.bytes;
  conn->advance(p.bytes, 0, now);
  p = conn->plan();
  ASSERT_EQ(p.kind, OutputPlan::Kind::File);
  EXPECT_EQ(p.offset, 5u);
  EXPECT_EQ(p.length, 10u);
  conn->advance(4, 0, now);  // the socket took 4 bytes
  p = conn->plan();
  EXPECT_EQ(p.offset, 9u);
  EXPECT_EQ(p.length, 6u);
  conn->advance(0, 2, now);  // 2 copied (pread) into a write of the adapter's
  EXPECT_EQ(conn->plan().kind, OutputPlan::Kind::None);  // sendfile waits for it
  conn->write_done(now);
  p = conn->plan();
  EXPECT_EQ(p.offset, 11u);
  conn->advance(p.length, 0, now);
  EXPECT_EQ(owner.use_count(), 1);  // sent: the descriptor may close
  EXPECT_EQ(stats.bytes_sent, head + 10);
  EXPECT_TRUE(conn->wants_resume());
  conn->resume(now);
  EXPECT_EQ(handler.seen.size(), 2u);
}

TEST_F(Fixture, ClientGoneMidAnswer) {
  open();
  handler.answer = [](uint64_t, const Request&) {};
  auto owner = std::make_shared<std::string>(std::string(100000, 'y'));
  conn->receive(std::string(kGetA) + std::string(kGetB), now);
  conn->begin(1, 200)->header("Content-Length", owner->size());
  conn->finish(1, *owner, owner);
  wire.hand(*conn, now);
  EXPECT_GT(owner.use_count(), 1);
  conn->abort();  // the write failed: the client is gone
  EXPECT_TRUE(conn->closed());
  EXPECT_FALSE(conn->wants_resume());
  EXPECT_EQ(conn->read_budget(), 0u);
  EXPECT_EQ(conn->begin(2, 200), nullptr);  // request 2 is never taken
  EXPECT_EQ(handler.seen.size(), 1u);
  EXPECT_GT(owner.use_count(), 1);  // the write under way still reads the body
  wire.complete(*conn, now);
  EXPECT_EQ(owner.use_count(), 1);
  EXPECT_EQ(conn->next_deadline(), ServerConnection::kNoDeadline);

  // Mid-stream, and a deferred answer after the close.
  reopen();
  conn->receive(kGetA, now);
  conn->begin(1, 200);
  conn->start_stream(1);
  conn->abort();
  EXPECT_FALSE(conn->send_piece(1, "x"));
  EXPECT_FALSE(conn->end_stream(1));
  EXPECT_FALSE(conn->is_current(1));
}

TEST_F(Fixture, MalformedRequestIsAnsweredAndClosed) {
  for (Split s : kSplits) {
    SCOPED_TRACE(name(s));
    reopen();
    run(std::string(kGetA) + "GET /x HTTP/1.1\r\nBad Header\r\n\r\n" + std::string(kGetB), s);
    EXPECT_EQ(handler.seen.size(), 1u);
    EXPECT_NE(wire.got.find("HTTP/1.1 400 Bad Request\r\n"), std::string::npos);
    EXPECT_TRUE(conn->closed());
    EXPECT_FALSE(wire.last_seen);
  }
}

TEST_F(Fixture, FailReplacesABegunHead) {
  open();
  handler.answer = [&](uint64_t seq, const Request&) {
    conn->begin(seq, 200)->header("X-Half", "built");
    conn->fail(seq, 500);
  };
  run(std::string(kGetA) + std::string(kGetB), Split::Whole);
  EXPECT_EQ(wire.got.find("X-Half"), std::string::npos);
  EXPECT_EQ(wire.got.rfind("HTTP/1.1 500 Internal Server Error\r\n", 0), 0u);
  EXPECT_EQ(handler.seen.size(), 1u);
  EXPECT_TRUE(conn->closed());
}

TEST_F(Fixture, RefuseSendsItsAnswerAndCloses) {
  open();
  conn->refuse("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(conn->read_budget(), 0u);
  wire.flush(*conn, now);
  EXPECT_EQ(wire.got.rfind("HTTP/1.1 503", 0), 0u);
  EXPECT_TRUE(conn->closed());
}

// The access log hears of the answers the connection gives itself, with what
// of the request was parsed.
TEST_F(Fixture, OwnAnswersAreReportedToTheHandler) {
  open();
  conn->receive("GET /x HTTP/1.1\r\nBad Header\r\n\r\n", now);
  ASSERT_EQ(handler.errors, std::vector<std::string>{"400 GET"});
  handler.errors.clear();
  reopen();
  conn->receive("GET /a HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n", now);
  EXPECT_EQ(handler.errors, std::vector<std::string>{"417 GET"});
  handler.errors.clear();
  reopen();
  conn->receive("GET /a HTTP/1.1\r\n", now);
  conn->tick(now + 10'000);
  EXPECT_EQ(handler.errors, std::vector<std::string>{"408 GET"});
  EXPECT_TRUE(handler.seen.empty());
}

// Bodies kept alive by an owner are not copied, except small ones behind a
// write under way: those join the answers gathered there (one write, and the
// owner is let go at once).
TEST_F(Fixture, SmallOwnedBodiesAreGatheredBehindAWriteUnderWay) {
  auto owner = std::make_shared<std::string>("owned body");
  handler.answer = [&](uint64_t seq, const Request&) {
    conn->begin(seq, 200)->header("Content-Length", owner->size());
    conn->finish(seq, *owner, owner);
  };
  open();
  conn->receive(kGetA, now);
  wire.hand(*conn, now);  // stuck in the kernel, owner held by the unit
  EXPECT_EQ(owner.use_count(), 2);
  conn->receive(kGetB, now);
  conn->receive(kGetC, now);
  EXPECT_EQ(owner.use_count(), 2) << "copied, not held";
  EXPECT_EQ(conn->plan().kind, OutputPlan::Kind::None);
  wire.complete(*conn, now);
  EXPECT_EQ(owner.use_count(), 1);
  const OutputPlan p = conn->plan();
  ASSERT_EQ(p.kind, OutputPlan::Kind::Bytes);
  EXPECT_EQ(p.nbufs, 1u);
  wire.flush(*conn, now);
  EXPECT_EQ(count(wire.got, "owned body"), 3u);
}

// A client that pipelines and does not read: one coalesced write in flight
// and one buffer gathering, however many writes max_writes would allow; the
// connection says it is backlogged (the adapter's metric) until the client reads.
TEST_F(Fixture, OneGatheredWriteInFlightForAClientThatDoesNotRead) {
  open();
  std::string input;
  for (int i = 0; i < 2000; ++i) input += kGetA;
  size_t at = 0;
  for (int round = 0; round < 50; ++round) {
    const size_t n = std::min(conn->read_budget(), input.size() - at);
    if (n > 0) {
      conn->receive(std::string_view(input).substr(at, n), now);
      at += n;
    }
    if (conn->wants_resume()) conn->resume(now);
    wire.hand(*conn, now);
  }
  EXPECT_LE(conn->write_units(), 2u);
  EXPECT_TRUE(conn->backlogged());
  EXPECT_EQ(conn->read_budget(), 0u);
  EXPECT_LT(handler.seen.size(), 2000u);
  while (!wire.units.empty()) {
    wire.complete(*conn, now);
    wire.flush(*conn, now);
    if (conn->wants_resume()) conn->resume(now);
    wire.flush(*conn, now);
  }
  EXPECT_FALSE(conn->backlogged());
}

// After the last answer of a connection (Connection: close) the request is
// still there for whoever reports it once the bytes are out.
TEST_F(Fixture, TheLastRequestOutlivesItsAnswer) {
  open();
  conn->receive("GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", now);
  EXPECT_EQ(conn->state(), State::Closing);
  EXPECT_EQ(conn->request().target, "/last");
  wire.flush(*conn, now);
  EXPECT_TRUE(conn->closed());
  EXPECT_EQ(conn->request().target, "/last");
}

// A gateway's answer: 1xx interim responses ahead of it (not for HTTP/1.0,
// not once it has begun), and a relayed head without our Date and Server.
TEST_F(Fixture, InterimAnswersAndRelayedHeads) {
  const std::vector<Header> hints{{"Link", "</s.css>; rel=preload"}};
  handler.answer = [&](uint64_t seq, const Request&) {
    EXPECT_TRUE(conn->interim(seq, 103, hints));
    EXPECT_FALSE(conn->interim(seq, 200, hints));
    conn->begin(seq, 200, /*relayed=*/true)->header("Content-Length", 2);
    EXPECT_FALSE(conn->interim(seq, 103, hints));
    conn->finish(seq, "ok");
  };
  open();
  run(kGetA, Split::Whole);
  EXPECT_EQ(wire.got.rfind("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                           "HTTP/1.1 200 OK\r\n",
                           0),
            0u)
      << wire.got;
  EXPECT_EQ(wire.got.find("Server: t"), std::string::npos);
  handler.answer = [&](uint64_t seq, const Request&) {
    EXPECT_FALSE(conn->interim(seq, 103, hints));
    handler.ok(seq, "/a");
  };
  reopen();
  run("GET /a HTTP/1.0\r\n\r\n", Split::Whole);
  EXPECT_EQ(wire.got.rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
}

}  // namespace
}  // namespace cdn::http
