// SPDX-License-Identifier: MIT
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
#include <vector>

#include "common/http/message.hpp"

namespace cdn::http {

struct Limits {
  size_t max_request_line = 8 * 1024;   // method + target + version; over: 414
  size_t max_header_bytes = 16 * 1024;  // all header names + values; over: 431
  size_t max_headers = 100;             // header count; over: 431
  uint64_t max_body = 0;  // request body bytes accepted and kept (Request::body); over: 413
};

// Strict reader of a chunked body (RFC 9112 section 7.1), used by both parsers
// in place of http-parser's. Built non-strict (as Debian builds it), that one
// takes any two bytes as the CRLF after chunk data, anything up to a CR as
// chunk extensions ("5 x", a bare LF), and reads trailers with its lenient
// header rules (bare LF, obs-fold). Each of those lets a front end and this
// server disagree on where a message ends (request smuggling). Here every
// byte must fit the grammar, so a message either ends where every strict
// reader ends it or is refused. Pure: no allocation, no callbacks; the
// caller hands it bytes and gets data pieces back (picohttpparser style).
class ChunkedDecoder {
 public:
  enum class Status : uint8_t {
    NeedMore,  // all input used, body not finished
    Data,      // `data` is the next piece of chunk data (inside the input)
    Done,      // the body (with its trailer section) ended; `consumed` says where
    Error,     // not chunked framing, or over a limit; see http_status
  };
  struct Step {
    Status status = Status::NeedMore;
    size_t consumed = 0;  // bytes of the input this step used
    std::string_view data;
    int http_status = 0;  // for Error: 400 malformed, 413 data over max_data, 431 metadata
    std::string_view reason;
  };

  // Begins a body: at most `max_data` bytes of chunk data (a chunk that
  // would cross it is refused at its size line) and at most `max_meta` bytes
  // of chunk extensions and trailer fields (line ends not counted).
  void start(uint64_t max_data, size_t max_meta);
  // Reads from `in` up to the next data piece, the end, an error, or the end of `in`.
  Step next(std::string_view in);

 private:
  enum class State : uint8_t {
    Size,            // first hex digit of a chunk-size
    SizeDigits,      // more digits, or what follows them
    ExtBws,          // before ';' (BWS)
    ExtNameStart,    // after ';': BWS, then a token
    ExtName,         // in the extension name
    ExtNameBws,      // after the name: BWS, then '=' or ';'
    ExtValueStart,   // after '=': BWS, then a token or a quoted-string
    ExtToken,        // in a token value
    ExtQuoted,       // in a quoted-string value
    ExtQuotedPair,   // after a backslash in it
    ExtAfterQuoted,  // after its closing quote
    SizeLf,          // the LF ending a chunk-size line
    Data,            // chunk data
    DataCr,          // the CRLF after chunk data
    DataLf,
    TrailerStart,  // a trailer line's first byte, or the CR of the final CRLF
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,  // the LF of the final CRLF
    Done,
    Failed,
  };
  Step fail(size_t consumed, int status, std::string_view reason);
  // Whether byte c, read in the current state, is an extension or trailer byte.
  bool counts_as_meta(unsigned char c) const;

  State state_ = State::Done;
  uint64_t size_ = 0;       // the chunk-size being read, then the data left in the chunk
  unsigned digits_ = 0;     // hex digits of the chunk-size read
  uint64_t data_left_ = 0;  // chunk data still allowed (max_data minus what was announced)
  size_t meta_left_ = 0;    // extension and trailer bytes still allowed
};

enum class ParseStatus {
  NeedMore,  // all input consumed, message not complete yet
  Complete,  // one message complete; `consumed` says where it ended
  Error,     // malformed or over a limit; `http_status` is the answer to send
};

struct ParseResult {
  ParseStatus status = ParseStatus::NeedMore;
  size_t consumed = 0;
  int http_status = 0;      // for Error: 400, 413, 414, 431, 501 or 505
  std::string_view reason;  // for Error: short text for the log
};

// Parses requests on a server connection. Request bodies are kept in
// Request::body up to Limits::max_body (a gateway forwards them). The
// request-target must be origin-form, absolute-form (reduced to origin-form,
// its authority replacing Host), "*" with OPTIONS, or authority-form with
// CONNECT; bytes RFC 3986 does not allow that browsers never send raw
// (controls, SP, DEL, >= 0x80, '"', '<', '>') are 400. See request_parser.cc.
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

  // Checks http-parser does not make on the raw head bytes (bare LF/CR,
  // obs-fold, overall head size); returns the offset of the first offending
  // byte, or data.size(). See request_parser.cc.
  size_t scan_head(std::string_view data);
  // Length of the run of bytes at the start of `data` that are neither CR nor LF.
  size_t line_run(std::string_view data) const;
  // Method and request-line-tail bookkeeping for a run of line bytes that
  // starts at head offset head_raw_bytes_.
  void note_line_bytes(std::string_view run);
  ParseResult fail(size_t consumed) const;
  // The common request read in one pass without http-parser; false (and
  // nothing changed) for anything else. See request_parser.cc.
  bool parse_whole_head(std::string_view data);
  // A header appended to request_, reusing a spare one's strings.
  Header& add_header();
  // Reads chunked body bytes from data[pos]; see ChunkedDecoder.
  ParseResult feed_chunked(std::string_view data, size_t pos);
  // Checks the request-target's form against the method and reduces an
  // absolute-form target to origin-form (see request_parser.cc); false (error set) when refused.
  bool settle_target();

  // Scanner states of scan_head(); Done once the empty line ending the head was seen.
  enum class Scan : uint8_t { Leading, Line, AfterCr, LineStart, EndCr, Done };

  Limits limits_;
  http_parser parser_{};
  http_parser_settings settings_{};
  Request request_;
  std::vector<Header> spare_;  // headers of earlier requests, reused (capacity kept)
  size_t line_bytes_ = 0;
  size_t header_bytes_ = 0;
  uint64_t body_bytes_ = 0;
  bool in_value_ = false;
  bool headers_done_ = false;
  bool complete_ = false;
  int error_status_ = 0;
  std::string_view error_reason_;
  // Added: header-name continuation tracking and the raw head scanner.
  bool in_name_ = false;  // last data callback was a header name (split across feeds)
  Scan scan_ = Scan::Leading;
  size_t head_raw_bytes_ = 0;
  bool in_method_ = true;            // scanner is still inside the method token
  size_t method_bad_at_ = SIZE_MAX;  // head offset of the first non-tchar method byte (501 vs 400)
  int scan_status_ = 0;              // 400/431 found by scan_head, reported after http-parser ran
  std::string_view scan_reason_;
  bool first_line_ = true;  // scanner is in the request line
  // Last bytes of the request line: the non-strict http-parser does not check
  // the letters of "HTTP/", so the scanner does.
  char line_tail_[9] = {};
  uint8_t tail_len_ = 0;
  // A chunked body is read by chunked_, not http-parser: true from the end
  // of the head (where http-parser was told to skip the body) to its end.
  bool chunked_body_ = false;
  ChunkedDecoder chunked_;
};

// Parses responses on a client connection (cdn-get, the prober). The body is
// handed to the sink piece by piece, so a 100 MiB download is never held in memory.
// Interim 1xx responses (other than 101) are skipped: Complete means the final
// response. Errors carry http_status 0 and a reason. An exception thrown by the
// sink is caught and turns into an Error.
//
// Decisions (request_parser.cc, response_parser.cc): bare LF, bare CR and
// obs-fold in a request head are 400; in a response bare LF is accepted and
// obs-fold becomes one SP. A chunked body is read strictly in both
// (ChunkedDecoder): an origin's framing is what the replica caches.
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

  ParseResult fail(size_t consumed) const;
  void restart_after_interim();
  // Reads chunked body bytes from data[pos] into the sink; see ChunkedDecoder.
  ParseResult feed_chunked(std::string_view data, size_t pos);

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
  // Added: continuation tracking (split fields, obs-fold) and interim (1xx) handling.
  bool in_name_ = false;
  // Raw scan of the response head for obs-fold: feed() runs http-parser up to
  // each fold and to the end of each head, so the value callback that follows
  // a fold is known to be its continuation, however the bytes were split.
  // LineStartCR: a CR began a line, so the next byte ends the head.
  enum class HeadScan : uint8_t { Leading, Line, LineStart, LineStartCR, Done };
  size_t next_head_event(std::string_view data, bool& fold);
  HeadScan head_scan_ = HeadScan::Leading;
  bool fold_next_ = false;  // the next value piece continues the previous line
  size_t line_bytes_ = 0;
  bool started_ = false;       // first byte of a status line seen
  bool interim_ = false;       // current message is a 1xx (other than 101): skipped, not reported
  bool failed_ = false;        // an error was reported (error_status_ is 0 for responses)
  uint8_t proto_matched_ = 0;  // bytes of "HTTP/" seen at the start (http-parser skips the check)
  bool chunked_body_ = false;  // as in RequestParser: the body is chunked_'s
  ChunkedDecoder chunked_;
};

}  // namespace cdn::http
