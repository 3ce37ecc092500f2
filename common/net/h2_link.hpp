// SPDX-License-Identifier: MIT
// HTTP/2 on a server connection: the adapter between a connection's
// transport (transport.hpp: TCP for h2c with prior knowledge, TLS when ALPN
// chose h2) and an http2::Session (common/http2/session.hpp), whose streams
// become Exchanges for the very handler the HTTP/1.1 path calls.
//
// Glossary and ownership:
// - H2Link: owned by the server's Connection (server.cc), which keeps the
//   transport, the timer and its place in the server's lists, and forwards
//   the transport's events here once the connection speaks HTTP/2: after a
//   TLS handshake that chose h2, or once the first bytes on a plain port are
//   the client preface (http2::kPreface; HTTP/1.1 goes on on the same port).
//   The link makes no socket call of its own: it writes through the
//   connection's transport, one write unit at a time (at most
//   SessionOptions::max_output bytes of frames), and tells the connection
//   when the session is over.
// - Stream exchange: one per request, made when the session hands the
//   request over and freed when the session says the stream closed. Its
//   Deferred holds it weakly, and points at nothing once its answer is done.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "common/http2/session.hpp"
#include "common/net/server.hpp"
#include "common/net/transport.hpp"

namespace cdn::net {

class H2Link final : public http2::SessionHandler {
 public:
  // `kick`: carry out what changed from outside the connection's own
  // callbacks (a deferred answer): the connection runs sync() unless busy.
  H2Link(Server& server, Connection& conn, std::function<void()> kick, uint64_t now);
  ~H2Link() override;
  H2Link(const H2Link&) = delete;
  H2Link& operator=(const H2Link&) = delete;

  http2::Session& session() { return session_; }
  // Writes what the session has while `t` takes it whole; false when a
  // write unit is under way or the transport failed (then the session is
  // aborted). `rounds`: how many outputs at most, so one connection's file
  // does not keep the loop from the others (more() says so).
  void flush(Transport& t, unsigned rounds);
  bool more() const { return !session_.writing() && !session_.closed() && want_more_; }
  // The oldest write unit is done.
  void write_done(uint64_t now);
  // Streamed answers that asked when_writable() and can take a piece now.
  void notify_writable();
  // The session is over and nothing is under way: close the transport.
  bool finished() const { return session_.aborted() || (session_.closed() && !session_.writing()); }

  // http2::SessionHandler
  void on_request(int32_t id, const http::Request& req) override;
  void on_stream_closed(int32_t id, bool whole, uint64_t body_bytes) override;
  void on_stream_writable(int32_t id) override;

 private:
  class Stream;
  friend class Stream;
  void kick() { kick_(); }

  Server& server_;
  Connection& conn_;
  std::function<void()> kick_;
  http2::Session session_;
  std::map<int32_t, std::unique_ptr<Stream>> streams_;
  std::string out_;    // the write unit under way
  size_t queued_ = 0;  // of out_, the bytes the transport queued
  bool want_more_ = false;
};

}  // namespace cdn::net
