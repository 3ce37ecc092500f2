// Incremental HTTP/1.1 parsers over Debian's libhttp-parser.
//
// Both parsers are fed whatever bytes arrived and report how many they
// consumed; they stop after one complete message so that pipelined requests
// are handled one at a time (the caller feeds the rest after reset()).
// Every length a peer controls is capped by Limits.
#pragma once

#include <http_parser.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>

#include "common/http/message.hpp"

namespace cdn::http {

struct Limits {
  size_t max_request_line = 8 * 1024;  // method + target + version; over: 414
  size_t max_header_bytes = 16 * 1024; // all header names + values; over: 431
  size_t max_headers = 100;            // header count; over: 431
  uint64_t max_body = 0;               // request body bytes accepted (GET/HEAD need none); over: 413
};

enum class ParseStatus {
  NeedMore,  // all input consumed, message not complete yet
  Complete,  // one message complete; `consumed` says where it ended
  Error,     // malformed or over a limit; `http_status` is the answer to send
};

struct ParseResult {
  ParseStatus status = ParseStatus::NeedMore;
  size_t consumed = 0;
  int http_status = 0;  // for Error: 400, 413, 414, 431, 501 or 505
  std::string_view reason;  // for Error: short text for the log
};

// Parses requests on a server connection. Request bodies are counted against
// Limits::max_body and discarded (the CDN serves GET/HEAD only).
class RequestParser {
 public:
  explicit RequestParser(const Limits& limits = {});
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  // Feed the next bytes. After Complete, request() is valid until reset().
  // After Error the parser stays in error until reset().
  ParseResult feed(std::string_view data);
  const Request& request() const { return request_; }
  // True once the request line and headers were read (body may still follow).
  bool headers_complete() const { return headers_done_; }
  // Prepare for the next request on the same connection.
  void reset();

 private:
  static int on_message_begin(http_parser*);
  static int on_url(http_parser*, const char*, size_t);
  static int on_header_field(http_parser*, const char*, size_t);
  static int on_header_value(http_parser*, const char*, size_t);
  static int on_headers_complete(http_parser*);
  static int on_body(http_parser*, const char*, size_t);
  static int on_message_complete(http_parser*);

  Limits limits_;
  http_parser parser_{};
  http_parser_settings settings_{};
  Request request_;
  size_t line_bytes_ = 0;
  size_t header_bytes_ = 0;
  uint64_t body_bytes_ = 0;
  bool in_value_ = false;
  bool headers_done_ = false;
  bool complete_ = false;
  int error_status_ = 0;
  std::string_view error_reason_;
};

// Parses responses on a client connection (cdn-get, the prober). The body is
// handed to `on_body` piece by piece, so a 100 MiB download is never held in memory.
class ResponseParser {
 public:
  using BodySink = std::function<void(std::string_view)>;

  explicit ResponseParser(const Limits& limits = {});
  ResponseParser(const ResponseParser&) = delete;
  ResponseParser& operator=(const ResponseParser&) = delete;

  // Must be called before feeding the response to a HEAD request (no body).
  void expect_no_body(bool v) { no_body_ = v; }
  void set_body_sink(BodySink sink) { sink_ = std::move(sink); }

  // Feed the next bytes; Complete once the whole message (with body) arrived.
  ParseResult feed(std::string_view data);
  // The peer closed the connection: completes a read-until-close body,
  // otherwise returns Error (truncated message).
  ParseResult finish();
  const Response& response() const { return response_; }
  bool headers_complete() const { return headers_done_; }
  uint64_t body_bytes() const { return body_bytes_; }
  void reset();

 private:
  static int on_message_begin(http_parser*);
  static int on_status(http_parser*, const char*, size_t);
  static int on_header_field(http_parser*, const char*, size_t);
  static int on_header_value(http_parser*, const char*, size_t);
  static int on_headers_complete(http_parser*);
  static int on_body(http_parser*, const char*, size_t);
  static int on_message_complete(http_parser*);

  Limits limits_;
  http_parser parser_{};
  http_parser_settings settings_{};
  Response response_;
  BodySink sink_;
  size_t header_bytes_ = 0;
  uint64_t body_bytes_ = 0;
  bool in_value_ = false;
  bool headers_done_ = false;
  bool complete_ = false;
  bool no_body_ = false;
  int error_status_ = 0;
  std::string_view error_reason_;
};

}  // namespace cdn::http
