// SPDX-License-Identifier: MIT
// The request parser: http-parser's callbacks plus a strict scan of the head.
//
// Decisions (RFC 9112 leaves them to the recipient):
//  * A bare LF line ending, a bare CR, and obs-fold (a header line starting
//    with SP/HT) are answered 400. http-parser (built non-strict by Debian)
//    accepts all three; a front proxy that reads them differently could be
//    made to see a different header set than we do (smuggling), and no real
//    client sends them. Detecting them costs one pass over the head bytes,
//    which http-parser reads anyway.
//  * Header names containing SP/HT ("Host : x") are 400: the non-strict
//    http-parser passes them through as part of the name.
#include "common/http/parser.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <string>

#include "common/http/parser_internal.hpp"

namespace cdn::http {

namespace {

using detail::is_hex;
using detail::trim;
using text::is_ows;
using text::istarts_with;

bool has_ows(std::string_view s) {
  for (char c : s) {
    if (is_ows(c)) return true;
  }
  return false;
}

// Head bytes the callbacks never see (OWS runs, blank lines before the request
// line) are bounded by this allowance on top of the counted limits.
size_t raw_head_cap(const Limits& l) {
  return l.max_request_line + l.max_header_bytes + 8 * (l.max_headers + 4);
}

// Header names http-parser reads framing or connection state from. It
// matches them by prefix ("Transfer-Encoding2" is flagged as a
// Transfer-Encoding) and takes Proxy-Connection as Connection, so the
// whole-head path leaves every name that starts like one to it.
bool names_framing(std::string_view name) {
  return istarts_with(name, "transfer-encoding") || istarts_with(name, "content-length") ||
         istarts_with(name, "upgrade") || istarts_with(name, "proxy-connection") ||
         istarts_with(name, "connection");
}

// Bytes a request-target may hold. RFC 3986 allows only unreserved,
// sub-delims, gen-delims and '%'. Refused here: controls (TAB and FF too,
// which the non-strict http-parser passes), SP, DEL, bytes >= 0x80, and
// '"', '<', '>'. Those are what the WHATWG URL standard percent-encodes in
// every part of a URL (so no browser sends them raw; wget encodes them too),
// and they would otherwise be copied into Location and logs as they came.
// Kept, though RFC 3986 lacks them: '\\', '^', '`', '{', '|', '}' (and '['
// ']' outside a host): browsers send them raw in queries ('|' and '^' in
// paths too), so refusing them would break real links; nginx takes them.
// '#' is kept as well (no client sends a fragment; query_of drops it).
constexpr std::array<bool, 256> kTargetByte = [] {
  std::array<bool, 256> t{};
  for (int c = 0x21; c < 0x7f; ++c) t[static_cast<size_t>(c)] = c != '"' && c != '<' && c != '>';
  return t;
}();

bool is_target_byte(unsigned char c) { return kTargetByte[c]; }

// RFC 3986 authority without userinfo (RFC 9110 4.2.4: a recipient treats
// userinfo in an http(s) URI as an error): host [ ":" port ], the host a
// non-empty reg-name, IPv4 address or IP-literal ("[::1]").
bool valid_authority(std::string_view a) {
  size_t host_end = 0;
  if (!a.empty() && a.front() == '[') {
    host_end = a.find(']');
    if (host_end == std::string_view::npos || host_end == 1) return false;
    for (char c : a.substr(1, host_end - 1)) {
      if (!is_hex(static_cast<unsigned char>(c)) && c != ':' && c != '.') return false;
    }
    ++host_end;
  } else {
    host_end = std::min(a.find(':'), a.size());
    if (host_end == 0) return false;  // RFC 9110 4.2.1: an empty host is invalid
    for (size_t i = 0; i < host_end; ++i) {
      const char c = a[i];
      if (c == '%') {
        if (host_end - i < 3 || !is_hex(static_cast<unsigned char>(a[i + 1])) ||
            !is_hex(static_cast<unsigned char>(a[i + 2]))) {
          return false;
        }
        i += 2;
      } else if (!is_hex(static_cast<unsigned char>(c)) &&
                 !((c | 0x20) >= 'g' && (c | 0x20) <= 'z') &&
                 std::string_view("-._~!$&'()*+,;=").find(c) == std::string_view::npos) {
        return false;
      }
    }
  }
  const std::string_view port = a.substr(host_end);
  if (port.empty()) return true;
  if (port.front() != ':' || port.size() > 6) return false;
  for (char c : port.substr(1)) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}
}  // namespace

RequestParser::RequestParser(const Limits& limits) : limits_(limits) {
  http_parser_settings_init(&settings_);
  settings_.on_message_begin = &RequestParser::on_message_begin;
  settings_.on_url = &RequestParser::on_url;
  settings_.on_header_field = &RequestParser::on_header_field;
  settings_.on_header_value = &RequestParser::on_header_value;
  settings_.on_headers_complete = &RequestParser::on_headers_complete;
  settings_.on_body = &RequestParser::on_body;
  settings_.on_message_complete = &RequestParser::on_message_complete;
  reset();
}

void RequestParser::reset() {
  // http_parser_pause() asserts outside HPE_OK/HPE_PAUSED; init clears errors anyway.
  if (HTTP_PARSER_ERRNO(&parser_) == HPE_PAUSED) http_parser_pause(&parser_, 0);
  http_parser_init(&parser_, HTTP_REQUEST);
  parser_.data = this;
  // Keep the header strings (and their capacity) for the next request: a
  // kept-alive connection then parses without allocating.
  for (auto& h : request_.headers) spare_.push_back(std::move(h));
  request_.clear();
  line_bytes_ = 0;
  header_bytes_ = 0;
  body_bytes_ = 0;
  in_value_ = false;
  in_name_ = false;
  headers_done_ = false;
  complete_ = false;
  error_status_ = 0;
  error_reason_ = {};
  scan_ = Scan::Leading;
  head_raw_bytes_ = 0;
  in_method_ = true;
  method_bad_at_ = SIZE_MAX;
  scan_status_ = 0;
  scan_reason_ = {};
  first_line_ = true;
  tail_len_ = 0;
  chunked_body_ = false;
}

// The bytes inside a line (the common case) are taken as one run: the method
// run is checked with the token table, the rest is searched for CR and LF with
// memchr, and the 9 bytes the request-line check needs are kept from the run's
// end. Only line ends go through the state machine one byte at a time. A feed
// split anywhere gives the same verdicts at the same offsets (the request
// fuzzer compares whole, two-piece and byte-by-byte feeding).
size_t RequestParser::scan_head(std::string_view data) {
  const size_t cap = raw_head_cap(limits_);
  const char* const base = data.data();
  const size_t n = data.size();
  size_t i = 0;
  while (i < n && scan_ != Scan::Done) {
    if (scan_ == Scan::Line && data[i] != '\r' && data[i] != '\n') {
      const size_t run = line_run(data.substr(i));
      // The cap is checked per byte: the byte that crosses it ends the scan.
      if (head_raw_bytes_ + run > cap) {
        const size_t allowed = cap - std::min(cap, head_raw_bytes_);
        note_line_bytes(data.substr(i, allowed));
        head_raw_bytes_ = cap + 1;
        scan_status_ = 431;
        scan_reason_ = "request head too large";
        return i + allowed;
      }
      note_line_bytes(data.substr(i, run));
      head_raw_bytes_ += run;
      i += run;
      continue;
    }
    const char c = base[i];
    if (++head_raw_bytes_ > cap) {
      scan_status_ = 431;
      scan_reason_ = "request head too large";
      return i;
    }
    switch (scan_) {
      case Scan::Leading:
        // http-parser skips empty lines before the request line (RFC 9112 2.2 allows it).
        if (c != '\r' && c != '\n') {
          // The first byte of the request line: take it with the run.
          --head_raw_bytes_;
          scan_ = Scan::Line;
          continue;
        }
        break;
      case Scan::Line:
        // Only a line end gets here (the run took everything else).
        if (in_method_) {
          in_method_ = false;
          method_bad_at_ = head_raw_bytes_ - 1;  // CR/LF inside the method
        }
        if (c == '\r') {
          scan_ = Scan::AfterCr;
          if (first_line_) {
            first_line_ = false;
            // " HTTP/d.d" must end the request line. A missing version
            // (HTTP/0.9) or "HTTX/1.1" lands here.
            const char* t = line_tail_;
            const bool ok = tail_len_ == 9 && std::string_view(t, 6) == " HTTP/" && t[7] == '.' &&
                            t[6] >= '0' && t[6] <= '9' && t[8] >= '0' && t[8] <= '9';
            if (!ok) {
              scan_status_ = 400;
              scan_reason_ = "malformed request line";
              return i;
            }
          }
        } else {
          scan_status_ = 400;
          scan_reason_ = "bare LF in request head";
          return i;
        }
        break;
      case Scan::AfterCr:
        if (c != '\n') {
          scan_status_ = 400;
          scan_reason_ = "bare CR in request head";
          return i;
        }
        scan_ = Scan::LineStart;
        break;
      case Scan::LineStart:
        if (c == '\r') {
          scan_ = Scan::EndCr;
        } else if (c == '\n') {
          scan_status_ = 400;
          scan_reason_ = "bare LF in request head";
          return i;
        } else if (is_ows(c)) {
          scan_status_ = 400;
          scan_reason_ = "obsolete line folding in request head";
          return i;
        } else {
          // A header line's first byte: take it with the run.
          --head_raw_bytes_;
          scan_ = Scan::Line;
          continue;
        }
        break;
      case Scan::EndCr:
        if (c != '\n') {
          scan_status_ = 400;
          scan_reason_ = "bare CR in request head";
          return i;
        }
        scan_ = Scan::Done;
        break;
      case Scan::Done:
        break;
    }
    ++i;
  }
  return n;
}

size_t RequestParser::line_run(std::string_view data) const {
  // memchr for CR (every line ends with one), then LF before it: both SIMD
  // scans in glibc, where a byte loop would cost several instructions a byte.
  const void* cr = std::memchr(data.data(), '\r', data.size());
  size_t end =
      cr != nullptr ? static_cast<size_t>(static_cast<const char*>(cr) - data.data()) : data.size();
  const void* lf = std::memchr(data.data(), '\n', end);
  if (lf != nullptr) end = static_cast<size_t>(static_cast<const char*>(lf) - data.data());
  return end;
}

void RequestParser::note_line_bytes(std::string_view run) {
  if (run.empty()) return;
  if (in_method_) {
    size_t k = 0;
    while (k < run.size() && is_token_char(static_cast<unsigned char>(run[k]))) ++k;
    if (k < run.size()) {
      in_method_ = false;
      // A space ends the method; any other non-token byte makes it malformed.
      if (run[k] != ' ') method_bad_at_ = head_raw_bytes_ + k;
    }
  }
  if (!first_line_) return;
  // Keep the last sizeof line_tail_ bytes of the request line.
  constexpr size_t cap = sizeof line_tail_;
  if (run.size() >= cap) {
    std::memcpy(line_tail_, run.data() + run.size() - cap, cap);
    tail_len_ = cap;
    return;
  }
  const size_t keep = std::min<size_t>(tail_len_, cap - run.size());
  std::memmove(line_tail_, line_tail_ + tail_len_ - keep, keep);
  std::memcpy(line_tail_ + keep, run.data(), run.size());
  tail_len_ = static_cast<uint8_t>(keep + run.size());
}

Header& RequestParser::add_header() {
  // Most requests carry a handful of headers: one allocation for them rather
  // than one per doubling of the vector, made with the first header (a
  // connection that never sends a request costs none).
  if (request_.headers.capacity() == 0) request_.headers.reserve(8);
  if (spare_.empty()) return request_.headers.emplace_back();
  Header& h = request_.headers.emplace_back(std::move(spare_.back()));
  spare_.pop_back();
  h.name.clear();
  h.value.clear();
  return h;
}

// The common request, read without http-parser: a GET or HEAD whose whole
// head arrived in one read, in the plainest form of the grammar. Anything
// else (a body, a Connection value other than close or keep-alive, Upgrade,
// a byte outside the plain sets, a limit within reach, an error of any kind)
// returns false with the parser untouched, and feed() goes the long way,
// where every verdict is made. So the two paths can differ only in speed;
// the request fuzzer checks that (a whole feed takes this path, byte by byte
// never does, and it compares the two).
bool RequestParser::parse_whole_head(std::string_view data) {
  // Bounded by the smaller limit, so no limit can be crossed in here.
  const size_t max = std::min(limits_.max_request_line, limits_.max_header_bytes);
  const size_t end = data.substr(0, max + 4).find("\r\n\r\n");
  if (end == std::string_view::npos) return false;
  const std::string_view head = data.substr(0, end + 2);  // lines, each with its CRLF

  std::string_view method;
  if (head.starts_with("GET ")) {
    method = "GET";
  } else if (head.starts_with("HEAD ")) {
    method = "HEAD";
  } else {
    return false;
  }
  size_t pos = method.size() + 1;
  const size_t target_end = head.find(' ', pos);
  if (target_end == std::string_view::npos || head[pos] != '/') return false;
  for (size_t i = pos; i < target_end; ++i) {
    if (!is_target_byte(static_cast<unsigned char>(head[i]))) return false;
  }
  const std::string_view target = head.substr(pos, target_end - pos);
  const std::string_view version = head.substr(target_end, 11);
  int minor = 0;
  if (version == " HTTP/1.1\r\n") {
    minor = 1;
  } else if (version != " HTTP/1.0\r\n") {
    return false;
  }
  pos = target_end + 11;

  size_t count = 0;
  size_t hosts = 0;
  bool close = false;
  bool keep_alive = false;
  while (pos < head.size()) {
    const size_t line_end = head.find('\r', pos);  // found: every line ends in CRLF
    if (head[line_end + 1] != '\n') return false;
    const std::string_view line = head.substr(pos, line_end - pos);
    pos = line_end + 2;
    ++count;
    size_t colon = 0;
    while (colon < line.size() && is_token_char(static_cast<unsigned char>(line[colon]))) ++colon;
    if (colon == 0 || colon == line.size() || line[colon] != ':') return false;
    std::string_view value = line.substr(colon + 1);
    for (char c : value) {
      if ((c < ' ' && c != '\t') || c > '~') return false;
    }
    while (!value.empty() && is_ows(value.front())) value.remove_prefix(1);
    const std::string_view name = line.substr(0, colon);
    if (iequals(name, "host")) {
      ++hosts;
    } else if (iequals(name, "connection")) {
      // Exactly one token with nothing around it; lists are http-parser's.
      if (iequals(value, "close")) {
        close = true;
      } else if (iequals(value, "keep-alive")) {
        keep_alive = true;
      } else {
        return false;
      }
    } else if (names_framing(name)) {
      return false;
    }
  }
  if (count > limits_.max_headers || hosts > 1 || (hosts == 0 && minor == 1)) return false;

  request_.method.assign(method);
  request_.target.assign(target);
  request_.version_major = 1;
  request_.version_minor = minor;
  for (pos = target_end + 11; pos < head.size();) {
    const size_t line_end = head.find('\r', pos);
    const std::string_view line = head.substr(pos, line_end - pos);
    pos = line_end + 2;
    const size_t colon = line.find(':');
    const std::string_view value = text::trim_ows(line.substr(colon + 1));
    Header& h = add_header();
    h.name.assign(line.substr(0, colon));
    h.value.assign(value);
  }
  // As http_should_keep_alive() decides for a request without a body.
  request_.keep_alive = minor == 1 ? !close : keep_alive;
  headers_done_ = true;
  complete_ = true;
  head_raw_bytes_ = end + 4;
  scan_ = Scan::Done;
  return true;
}

ParseResult RequestParser::fail(size_t consumed) const {
  ParseResult r;
  r.status = ParseStatus::Error;
  r.consumed = consumed;
  r.http_status = error_status_;
  r.reason = error_reason_;
  return r;
}

ParseResult RequestParser::feed(std::string_view data) {
  if (error_status_ != 0) return fail(0);
  if (complete_) {
    // Caller bug: the parser is paused on a finished message.
    return ParseResult{ParseStatus::Error, 0, 500, "feed() after Complete without reset()"};
  }
  if (chunked_body_) return feed_chunked(data, 0);
  if (head_raw_bytes_ == 0 && scan_ == Scan::Leading && parse_whole_head(data)) {
    return ParseResult{ParseStatus::Complete, head_raw_bytes_, 0, {}};
  }
  const size_t feed_base = head_raw_bytes_;  // head offset of data[0]
  const size_t limit = scan_ == Scan::Done ? data.size() : scan_head(data);
  size_t n = 0;
  // A zero length tells http-parser the stream ended, so never pass one here.
  if (limit > 0) n = http_parser_execute(&parser_, &settings_, data.data(), limit);
  if (complete_) return ParseResult{ParseStatus::Complete, n, 0, {}};
  // http-parser stopped (paused) at the end of a head whose body is chunked.
  if (chunked_body_) return feed_chunked(data, n);
  const http_errno err = HTTP_PARSER_ERRNO(&parser_);
  if (err != HPE_OK) {
    if (error_status_ == 0) {
      // Not one of our callbacks: map http-parser's own verdict.
      error_reason_ = http_errno_description(err);
      switch (err) {
        case HPE_INVALID_VERSION:
          error_status_ = 505;
          break;
        case HPE_INVALID_METHOD:
          // Only a well-formed but unknown method is "not implemented";
          // binary garbage (e.g. a TLS hello) is a bad request. Judged on the
          // bytes up to the one http-parser refused (n), so the verdict does
          // not depend on how much the scanner happened to see beyond it.
          error_status_ = method_bad_at_ > feed_base + n ? 501 : 400;
          break;
        case HPE_HEADER_OVERFLOW:
          error_status_ = 431;
          break;
        default:
          error_status_ = 400;
          break;
      }
    }
    return fail(n);
  }
  if (scan_status_ != 0) {
    error_status_ = scan_status_;
    error_reason_ = scan_reason_;
    return fail(n);
  }
  return ParseResult{ParseStatus::NeedMore, n, 0, {}};
}

ParseResult RequestParser::feed_chunked(std::string_view data, size_t pos) {
  for (;;) {
    const ChunkedDecoder::Step step = chunked_.next(data.substr(pos));
    pos += step.consumed;
    switch (step.status) {
      case ChunkedDecoder::Status::Data:
        body_bytes_ += step.data.size();  // the decoder holds max_body
        request_.body.append(step.data);
        break;
      case ChunkedDecoder::Status::Done:
        chunked_body_ = false;
        complete_ = true;
        return ParseResult{ParseStatus::Complete, pos, 0, {}};
      case ChunkedDecoder::Status::Error:
        error_status_ = step.http_status;
        error_reason_ = step.reason;
        return fail(pos);
      case ChunkedDecoder::Status::NeedMore:
        return ParseResult{ParseStatus::NeedMore, pos, 0, {}};
    }
  }
}

// The forms of request-target (RFC 9112 3.2): origin-form ("/a?b") for
// every method; absolute-form ("http://host/a?b"), which a server MUST
// accept (3.2.2), only with the http and https schemes; asterisk-form only
// with OPTIONS; authority-form only with CONNECT, left as it is (the daemons
// answer 405 and close). An absolute-form target is reduced here to the
// origin-form of its path and query, so everything after the parser (path
// mapping, the balancer's Location) sees one form.
//
// Its authority replaces the Host value: RFC 9112 3.2.2 has the server
// ignore Host and use the target's authority. A mismatch is therefore not an
// error; refusing it would break clients that talk to us as a proxy, and
// keeping Host would give two answers to "which host" in one request. Host is
// still required in HTTP/1.1 (RFC 9112 3.2.2: a client sends it even then).
bool RequestParser::settle_target() {
  std::string& target = request_.target;
  auto refuse = [this](std::string_view reason) {
    error_status_ = 400;
    error_reason_ = reason;
    return false;
  };
  if (target.starts_with('/')) return true;
  if (request_.method == "CONNECT") return true;
  if (target == "*") return request_.method == "OPTIONS" || refuse("'*' target without OPTIONS");
  const size_t colon = target.find(':');
  const std::string_view scheme = std::string_view(target).substr(0, colon);
  if (colon == std::string::npos || (!iequals(scheme, "http") && !iequals(scheme, "https"))) {
    return refuse("request target neither a path nor an http(s) URI");
  }
  // http-parser made sure "://" follows the scheme.
  const size_t authority_at = colon + 3;
  const size_t path_at = std::min(target.find_first_of("/?#", authority_at), target.size());
  const std::string_view authority =
      std::string_view(target).substr(authority_at, path_at - authority_at);
  if (!valid_authority(authority)) return refuse("invalid authority in request target");
  Header* host = nullptr;
  for (Header& h : request_.headers) {
    if (iequals(h.name, "host")) host = &h;
  }
  if (host == nullptr) {
    // HTTP/1.0 (1.1 without Host was refused before): the authority becomes its Host.
    if (request_.headers.size() >= limits_.max_headers) {
      error_status_ = 431;
      error_reason_ = "too many request header fields";
      return false;
    }
    host = &add_header();
    host->name = "Host";
  }
  host->value.assign(authority);
  // "http://h" and "http://h?q" have an empty path: origin-form needs "/".
  const bool slash = path_at < target.size() && target[path_at] == '/';
  target.erase(0, path_at);
  if (!slash) target.insert(0, 1, '/');
  return true;
}

int RequestParser::on_message_begin(http_parser*) { return 0; }

int RequestParser::on_url(http_parser* p, const char* at, size_t len) {
  auto* self = static_cast<RequestParser*>(p->data);
  if (self->request_.method.empty()) {
    // http-parser matched the method against its table, so its name is the wire text.
    self->request_.method = http_method_str(static_cast<http_method>(p->method));
    self->line_bytes_ += self->request_.method.size() + 1;
  }
  self->line_bytes_ += len;
  if (self->line_bytes_ > self->limits_.max_request_line) {
    self->error_status_ = 414;
    self->error_reason_ = "request line too long";
    return -1;
  }
  for (size_t i = 0; i < len; ++i) {
    if (!is_target_byte(static_cast<unsigned char>(at[i]))) {
      self->error_status_ = 400;
      self->error_reason_ = "invalid byte in request target";
      return -1;
    }
  }
  self->request_.target.append(at, len);
  return 0;
}

int RequestParser::on_header_field(http_parser* p, const char* at, size_t len) {
  auto* self = static_cast<RequestParser*>(p->data);
  self->header_bytes_ += len;
  if (self->header_bytes_ > self->limits_.max_header_bytes) {
    self->error_status_ = 431;
    self->error_reason_ = "request header fields too large";
    return -1;
  }
  if (self->headers_done_) return 0;  // chunked trailers: counted, not kept
  if (!self->in_name_) {
    if (self->request_.headers.size() >= self->limits_.max_headers) {
      self->error_status_ = 431;
      self->error_reason_ = "too many request header fields";
      return -1;
    }
    self->add_header();
    self->in_name_ = true;
    self->in_value_ = false;
  }
  const std::string_view piece(at, len);
  if (has_ows(piece)) {
    self->error_status_ = 400;
    self->error_reason_ = "whitespace in header name";
    return -1;
  }
  self->request_.headers.back().name.append(piece);
  return 0;
}

int RequestParser::on_header_value(http_parser* p, const char* at, size_t len) {
  auto* self = static_cast<RequestParser*>(p->data);
  self->header_bytes_ += len;
  if (self->header_bytes_ > self->limits_.max_header_bytes) {
    self->error_status_ = 431;
    self->error_reason_ = "request header fields too large";
    return -1;
  }
  if (self->headers_done_ || self->request_.headers.empty()) return 0;
  self->in_name_ = false;
  self->in_value_ = true;
  self->request_.headers.back().value.append(at, len);
  return 0;
}

int RequestParser::on_headers_complete(http_parser* p) {
  auto* self = static_cast<RequestParser*>(p->data);
  Request& r = self->request_;
  auto fail = [self](int status, std::string_view reason) {
    self->error_status_ = status;
    self->error_reason_ = reason;
    return -1;
  };
  for (Header& h : r.headers) trim(h.value);
  r.version_major = p->http_major;
  r.version_minor = p->http_minor;
  if (r.method.empty()) r.method = http_method_str(static_cast<http_method>(p->method));
  // http-parser accepts any single-digit version (and HTTP/0.9 without one).
  if (p->http_major != 1) return fail(505, "HTTP version not supported");

  size_t hosts = 0;
  size_t transfer_encodings = 0;
  bool te_chunked_only = true;
  for (const Header& h : r.headers) {
    if (iequals(h.name, "host")) {
      ++hosts;
    } else if (iequals(h.name, "transfer-encoding")) {
      ++transfer_encodings;
      if (!iequals(h.value, "chunked")) te_chunked_only = false;
    }
  }
  if (hosts > 1) return fail(400, "more than one Host header");
  if (hosts == 0 && p->http_minor >= 1) return fail(400, "HTTP/1.1 request without Host");
  if (!self->settle_target()) return -1;
  if (transfer_encodings > 0) {
    // Anything but a single "chunked" is a framing we cannot read the same
    // way as every proxy in front of us; HTTP/1.0 has no Transfer-Encoding.
    if (transfer_encodings > 1 || !te_chunked_only) {
      return fail(400, "unsupported Transfer-Encoding");
    }
    if (p->http_minor == 0) return fail(400, "Transfer-Encoding in HTTP/1.0 request");
  }
  if ((p->flags & F_CONTENTLENGTH) != 0) {
    r.content_length = p->content_length;
    if (p->content_length > self->limits_.max_body) return fail(413, "request body too large");
  }
  r.chunked = (p->flags & F_CHUNKED) != 0;
  // No protocol switch is supported: after an Upgrade/CONNECT request the
  // peer may send non-HTTP bytes, so the connection ends after the answer.
  r.keep_alive = http_should_keep_alive(p) != 0 && p->upgrade == 0;
  self->headers_done_ = true;
  self->in_name_ = false;
  self->in_value_ = false;
  if (r.chunked) {
    // The body is read by the strict decoder: http-parser skips it and
    // stops (on_message_complete) right after the head.
    self->chunked_body_ = true;
    self->chunked_.start(self->limits_.max_body, self->limits_.max_header_bytes);
    return 1;
  }
  return 0;
}

int RequestParser::on_body(http_parser* p, const char* at, size_t len) {
  auto* self = static_cast<RequestParser*>(p->data);
  self->body_bytes_ += len;
  if (self->body_bytes_ > self->limits_.max_body) {
    self->error_status_ = 413;
    self->error_reason_ = "request body too large";
    return -1;
  }
  self->request_.body.append(at, len);
  return 0;
}

int RequestParser::on_message_complete(http_parser* p) {
  auto* self = static_cast<RequestParser*>(p->data);
  // At the end of a chunked message's head the body is still to come.
  self->complete_ = !self->chunked_body_;
  // Stop here: the bytes after this message belong to the next request, which
  // the caller feeds after reset().
  http_parser_pause(p, 1);
  return 0;
}
}  // namespace cdn::http
