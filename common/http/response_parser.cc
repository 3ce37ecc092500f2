// SPDX-License-Identifier: MIT
// The response parser: http-parser's callbacks, 1xx heads skipped.
//
// Decisions (RFC 9112 leaves them to the recipient): bare LF is accepted
// (http-parser's default) and obs-fold is replaced by one SP as RFC 9112
// section 5.2 asks of user agents.
#include "common/http/parser.hpp"

#include <string>

#include "common/http/parser_internal.hpp"

namespace cdn::http {

using detail::trim;
using text::is_ows;

ResponseParser::ResponseParser(const Limits& limits) : limits_(limits) {
  http_parser_settings_init(&settings_);
  settings_.on_message_begin = &ResponseParser::on_message_begin;
  settings_.on_status = &ResponseParser::on_status;
  settings_.on_header_field = &ResponseParser::on_header_field;
  settings_.on_header_value = &ResponseParser::on_header_value;
  settings_.on_headers_complete = &ResponseParser::on_headers_complete;
  settings_.on_body = &ResponseParser::on_body;
  settings_.on_message_complete = &ResponseParser::on_message_complete;
  reset();
}

void ResponseParser::reset() {
  // http_parser_pause() asserts outside HPE_OK/HPE_PAUSED; init clears errors anyway.
  if (HTTP_PARSER_ERRNO(&parser_) == HPE_PAUSED) http_parser_pause(&parser_, 0);
  http_parser_init(&parser_, HTTP_RESPONSE);
  parser_.data = this;
  response_.clear();
  header_bytes_ = 0;
  body_bytes_ = 0;
  in_value_ = false;
  in_name_ = false;
  head_scan_ = HeadScan::Leading;
  fold_next_ = false;
  headers_done_ = false;
  complete_ = false;
  error_status_ = 0;
  error_reason_ = {};
  line_bytes_ = 0;
  started_ = false;
  interim_ = false;
  failed_ = false;
  proto_matched_ = 0;
  chunked_body_ = false;
  // no_body_ and sink_ are per-request settings the caller makes before feeding: kept.
}

void ResponseParser::restart_after_interim() {
  response_.clear();
  header_bytes_ = 0;
  line_bytes_ = 0;
  in_value_ = false;
  in_name_ = false;
  head_scan_ = HeadScan::Leading;
  fold_next_ = false;
  headers_done_ = false;
  started_ = false;
  interim_ = false;
  // proto_matched_ stays: the next "HTTP/" may start mid-buffer, where feed() does not look.
}

ParseResult ResponseParser::fail(size_t consumed) const {
  ParseResult r;
  r.status = ParseStatus::Error;
  r.consumed = consumed;
  r.http_status = error_status_;
  r.reason = error_reason_;
  return r;
}

ParseResult ResponseParser::feed(std::string_view data) {
  if (failed_) return fail(0);
  if (complete_) {
    return ParseResult{ParseStatus::Error, 0, 0, "feed() after Complete without reset()"};
  }
  if (data.empty()) return ParseResult{ParseStatus::NeedMore, 0, 0, {}};
  if (chunked_body_) return feed_chunked(data, 0);
  // The non-strict http-parser skips the letters of "HTTP/" after the 'H'.
  static constexpr std::string_view kProto = "HTTP/";
  for (size_t i = 0; i < data.size() && proto_matched_ < kProto.size(); ++i) {
    if (proto_matched_ == 0 && (data[i] == '\r' || data[i] == '\n')) continue;
    if (data[i] != kProto[proto_matched_]) {
      failed_ = true;
      error_reason_ = "not an HTTP/1.x response";
      return fail(0);
    }
    ++proto_matched_;
  }
  size_t pos = 0;
  while (pos < data.size()) {
    bool fold = false;
    const size_t end =
        head_scan_ == HeadScan::Done ? data.size() : pos + next_head_event(data.substr(pos), fold);
    if (end > pos) {
      const size_t n = http_parser_execute(&parser_, &settings_, data.data() + pos, end - pos);
      pos += n;
      if (complete_) return ParseResult{ParseStatus::Complete, pos, 0, {}};
      // Paused at the end of a head whose body is chunked: the decoder's now.
      if (chunked_body_) return feed_chunked(data, pos);
      const http_errno err = HTTP_PARSER_ERRNO(&parser_);
      if (err == HPE_PAUSED) {
        // Only an interim response pauses without completing (a failing
        // callback is an HPE_CB_* error). The scan restarted at its end, so a
        // fold it reported past that end is found again by the next scan.
        http_parser_pause(&parser_, 0);
        continue;
      }
      if (err != HPE_OK) {
        if (!failed_) {
          failed_ = true;
          error_reason_ = http_errno_description(err);
        }
        return fail(pos);
      }
    }
    if (fold) fold_next_ = true;
  }
  return ParseResult{ParseStatus::NeedMore, pos, 0, {}};
}

size_t ResponseParser::next_head_event(std::string_view data, bool& fold) {
  // Returns the offset of a fold's first whitespace byte (fold = true) or one
  // past the byte ending the head. Lines end at LF (a CR before it is left to
  // http-parser, which also accepts a bare LF in responses). The head ends
  // where http-parser (not strict, as Debian builds it) ends it: at an empty
  // line's LF, or at the byte after a CR that begins a line, whatever that
  // byte is. A scan that missed such an end would scan the body as a head
  // (and, for pipelined responses fed one at a time, every following byte
  // for each one).
  for (size_t i = 0; i < data.size(); ++i) {
    const char c = data[i];
    switch (head_scan_) {
      case HeadScan::Leading:
        if (c != '\r' && c != '\n') head_scan_ = HeadScan::Line;
        break;
      case HeadScan::Line:
        if (c == '\n') head_scan_ = HeadScan::LineStart;
        break;
      case HeadScan::LineStart:
        if (c == '\n') {
          head_scan_ = HeadScan::Done;
          return i + 1;
        }
        if (c == ' ' || c == '\t') {
          head_scan_ = HeadScan::Line;
          fold = true;
          return i;
        }
        head_scan_ = c == '\r' ? HeadScan::LineStartCR : HeadScan::Line;
        break;
      case HeadScan::LineStartCR:
        head_scan_ = HeadScan::Done;
        return i + 1;
      case HeadScan::Done:
        return i;
    }
  }
  return data.size();
}

ParseResult ResponseParser::finish() {
  if (failed_) return fail(0);
  if (complete_) return ParseResult{ParseStatus::Complete, 0, 0, {}};
  if (chunked_body_) {
    failed_ = true;
    error_reason_ = "connection closed inside the response body";
    return fail(0);
  }
  if (!started_) {
    failed_ = true;
    error_reason_ = "connection closed before a response";
    return fail(0);
  }
  // Length 0 is http-parser's end-of-stream signal: it completes a body read
  // until close and reports HPE_INVALID_EOF_STATE anywhere else.
  http_parser_execute(&parser_, &settings_, "", 0);
  if (complete_) return ParseResult{ParseStatus::Complete, 0, 0, {}};
  if (!failed_) {
    failed_ = true;
    error_reason_ = headers_done_ ? "connection closed inside the response body"
                                  : "connection closed inside the response head";
  }
  return fail(0);
}

ParseResult ResponseParser::feed_chunked(std::string_view data, size_t pos) {
  for (;;) {
    const ChunkedDecoder::Step step = chunked_.next(data.substr(pos));
    pos += step.consumed;
    switch (step.status) {
      case ChunkedDecoder::Status::Data:
        body_bytes_ += step.data.size();
        if (!sink_) break;
        try {
          sink_(step.data);
        } catch (...) {
          failed_ = true;
          error_reason_ = "body sink failed";
          return fail(pos);
        }
        break;
      case ChunkedDecoder::Status::Done:
        chunked_body_ = false;
        complete_ = true;
        return ParseResult{ParseStatus::Complete, pos, 0, {}};
      case ChunkedDecoder::Status::Error:
        failed_ = true;
        error_reason_ = step.reason;
        return fail(pos);
      case ChunkedDecoder::Status::NeedMore:
        return ParseResult{ParseStatus::NeedMore, pos, 0, {}};
    }
  }
}

int ResponseParser::on_message_begin(http_parser* p) {
  static_cast<ResponseParser*>(p->data)->started_ = true;
  return 0;
}

int ResponseParser::on_status(http_parser* p, const char* at, size_t len) {
  auto* self = static_cast<ResponseParser*>(p->data);
  self->line_bytes_ += len;
  if (self->line_bytes_ > self->limits_.max_request_line) {
    self->failed_ = true;
    self->error_reason_ = "status line too long";
    return -1;
  }
  self->response_.reason.append(at, len);
  return 0;
}

int ResponseParser::on_header_field(http_parser* p, const char* at, size_t len) {
  auto* self = static_cast<ResponseParser*>(p->data);
  self->header_bytes_ += len;
  if (self->header_bytes_ > self->limits_.max_header_bytes) {
    self->failed_ = true;
    self->error_reason_ = "response header fields too large";
    return -1;
  }
  if (self->headers_done_) return 0;  // trailers: counted, not kept
  self->fold_next_ = false;           // a fold of only whitespace: nothing to join
  if (!self->in_name_) {
    if (self->response_.headers.size() >= self->limits_.max_headers) {
      self->failed_ = true;
      self->error_reason_ = "too many response header fields";
      return -1;
    }
    self->response_.headers.emplace_back();
    self->in_name_ = true;
    self->in_value_ = false;
  }
  self->response_.headers.back().name.append(at, len);
  return 0;
}

int ResponseParser::on_header_value(http_parser* p, const char* at, size_t len) {
  auto* self = static_cast<ResponseParser*>(p->data);
  self->header_bytes_ += len;
  if (self->header_bytes_ > self->limits_.max_header_bytes) {
    self->failed_ = true;
    self->error_reason_ = "response header fields too large";
    return -1;
  }
  if (self->headers_done_ || self->response_.headers.empty()) return 0;
  // Any value callback ends the name, even one that adds nothing (an empty
  // value followed by a fold of only whitespace): the next name is a new field.
  self->in_name_ = false;
  self->in_value_ = true;
  std::string_view piece(at, len);
  std::string& value = self->response_.headers.back().value;
  if (self->fold_next_) {
    // obs-fold: RFC 9112 5.2 has a user agent replace it with one SP.
    while (!piece.empty() && is_ows(piece.front())) piece.remove_prefix(1);
    if (piece.empty()) return 0;  // only whitespace so far; the fold stays pending
    if (!value.empty()) value.push_back(' ');
    self->fold_next_ = false;
  }
  value.append(piece);
  return 0;
}

int ResponseParser::on_headers_complete(http_parser* p) {
  auto* self = static_cast<ResponseParser*>(p->data);
  Response& r = self->response_;
  // Runs of whitespace inside a value become one SP. An obs-fold must become
  // "one or more SP" (RFC 9112 5.2), and how much of a fold's whitespace
  // reaches the callbacks depends on where the input was split (notably
  // around skipped 1xx heads): collapsing makes the result split-independent.
  for (Header& h : r.headers) {
    std::string& v = h.value;
    size_t w = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      const char c = is_ows(v[i]) ? ' ' : v[i];
      if (c == ' ' && w > 0 && v[w - 1] == ' ') continue;
      v[w++] = c;
    }
    v.resize(w);
  }
  for (Header& h : r.headers) trim(h.value);
  r.status = p->status_code;
  // http-parser accepts any 1-3 digit code ("HTTP/1.0 2"); RFC 9110 codes are 100-999.
  if (r.status < 100) {
    self->failed_ = true;
    self->error_reason_ = "invalid status code";
    return -1;
  }
  r.version_major = p->http_major;
  r.version_minor = p->http_minor;
  if ((p->flags & F_CONTENTLENGTH) != 0) r.content_length = p->content_length;
  r.chunked = (p->flags & F_CHUNKED) != 0;
  r.keep_alive = http_should_keep_alive(p) != 0;
  self->headers_done_ = true;
  self->in_name_ = false;
  self->in_value_ = false;
  // 1xx (but 101) are interim: skipped so the caller sees the final response.
  self->interim_ = r.status >= 100 && r.status < 200 && r.status != 101;
  // These have no body whatever their Content-Length says (RFC 9110 6.4.1);
  // http-parser would otherwise wait for Content-Length bytes after a 304.
  const bool no_body =
      self->no_body_ || (r.status >= 100 && r.status < 200) || r.status == 204 || r.status == 304;
  if (!no_body && r.chunked) {
    // Read by the strict decoder; http-parser stops after the head. No
    // size limit on a download, but one on extensions and trailers.
    self->chunked_body_ = true;
    self->chunked_.start(UINT64_MAX, self->limits_.max_header_bytes);
  }
  return no_body || r.chunked ? 1 : 0;
}

int ResponseParser::on_body(http_parser* p, const char* at, size_t len) {
  auto* self = static_cast<ResponseParser*>(p->data);
  self->body_bytes_ += len;
  if (!self->sink_) return 0;
  try {
    self->sink_(std::string_view(at, len));
  } catch (...) {
    // Never let an exception unwind through http-parser's C frames.
    self->failed_ = true;
    self->error_reason_ = "body sink failed";
    return -1;
  }
  return 0;
}

int ResponseParser::on_message_complete(http_parser* p) {
  auto* self = static_cast<ResponseParser*>(p->data);
  if (self->interim_) {
    // Paused here so feed() scans the next head from its first byte.
    self->restart_after_interim();
    http_parser_pause(p, 1);
    return 0;
  }
  // Skipping the body changes the verdict (no read-until-close after HEAD/304).
  self->response_.keep_alive = http_should_keep_alive(p) != 0;
  self->complete_ = !self->chunked_body_;  // a chunked body is still to come
  http_parser_pause(p, 1);
  return 0;
}
}  // namespace cdn::http
