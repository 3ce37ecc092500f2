// SPDX-License-Identifier: MIT
// The chunked transfer coding (RFC 9112 section 7.1), decoded for both
// parsers.
#include "common/http/parser.hpp"

#include <string>

#include "common/http/parser_internal.hpp"

namespace cdn::http {

using detail::is_hex;

// ---------------------------------------------------------------------------
// ChunkedDecoder
//
//   chunked-body = *chunk last-chunk trailer-section CRLF
//   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//   chunk-ext    = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//   chunk-ext-val = token / quoted-string
//   trailer-section = *( field-line CRLF )
//
// Decisions: CRLF only (no bare LF, as in request heads); no whitespace after
// the size unless a ';' follows ("5 \r\n" fits no rule); at most 16 hex
// digits (leading zeros included), so the size cannot overflow; obs-fold in
// trailers is refused. Trailers are checked and dropped, not kept.

namespace {

unsigned hex_digit(unsigned char c) {
  if (c <= '9') return c - '0';
  return (c | 0x20) - 'a' + 10;
}

// qdtext and the byte after a backslash in a quoted-string, and a field
// value's bytes: HTAB, SP, VCHAR, obs-text.
bool is_field_byte(unsigned char c) { return c == '\t' || (c >= ' ' && c != 0x7f); }

}  // namespace

void ChunkedDecoder::start(uint64_t max_data, size_t max_meta) {
  state_ = State::Size;
  size_ = 0;
  digits_ = 0;
  data_left_ = max_data;
  meta_left_ = max_meta;
}

ChunkedDecoder::Step ChunkedDecoder::fail(size_t consumed, int status, std::string_view reason) {
  state_ = State::Failed;
  return Step{Status::Error, consumed, {}, status, reason};
}

bool ChunkedDecoder::counts_as_meta(unsigned char c) const {
  switch (state_) {
    case State::SizeDigits:
      return !is_hex(c) && c != '\r';  // the first byte of an extension
    case State::ExtBws:
    case State::ExtNameStart:
    case State::ExtName:
    case State::ExtNameBws:
    case State::ExtValueStart:
    case State::ExtToken:
    case State::ExtQuoted:
    case State::ExtQuotedPair:
    case State::ExtAfterQuoted:
    case State::TrailerStart:
    case State::TrailerName:
    case State::TrailerValue:
      return c != '\r';
    default:
      return false;
  }
}

ChunkedDecoder::Step ChunkedDecoder::next(std::string_view in) {
  auto bad_ext = [this](size_t at, unsigned char c) {
    return fail(at, 400, c == '\n' ? "bare LF in chunk extension" : "malformed chunk extension");
  };
  static constexpr std::string_view kBadTrailer = "malformed trailer field";
  size_t i = 0;
  while (i < in.size()) {
    if (state_ == State::Data) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(size_, in.size() - i));
      size_ -= n;
      if (size_ == 0) state_ = State::DataCr;
      return Step{Status::Data, i + n, in.substr(i, n), 0, {}};
    }
    const auto c = static_cast<unsigned char>(in[i]);
    const bool ows = c == ' ' || c == '\t';
    const bool tchar = is_token_char(c);
    if (counts_as_meta(c) && meta_left_-- == 0) {
      return fail(i, 431, "chunk extensions or trailers too large");
    }
    switch (state_) {
      case State::Size:
        if (!is_hex(c)) return fail(i, 400, "invalid chunk size");
        size_ = hex_digit(c);
        digits_ = 1;
        state_ = State::SizeDigits;
        break;
      case State::SizeDigits:
        if (is_hex(c)) {
          if (++digits_ > 16) return fail(i, 400, "chunk size too long");
          size_ = size_ * 16 + hex_digit(c);
          break;
        }
        if (size_ > data_left_) return fail(i, 413, "chunked body too large");
        data_left_ -= size_;
        if (c == '\r') {
          state_ = State::SizeLf;
        } else if (c == ';') {
          state_ = State::ExtNameStart;
        } else if (ows) {
          state_ = State::ExtBws;
        } else {
          return fail(i, 400, "invalid byte after chunk size");
        }
        break;
      case State::ExtBws:
        if (c == ';') {
          state_ = State::ExtNameStart;
        } else if (!ows) {
          return bad_ext(i, c);
        }
        break;
      case State::ExtNameStart:
        if (tchar) {
          state_ = State::ExtName;
        } else if (!ows) {
          return bad_ext(i, c);
        }
        break;
      case State::ExtName:
      case State::ExtNameBws:
      case State::ExtToken:
      case State::ExtAfterQuoted: {
        // After a name: '=' and a value may follow. After a name or a value:
        // BWS then ';', or (with no BWS) the line end.
        const bool after_name = state_ == State::ExtName || state_ == State::ExtNameBws;
        if (c == '=' && after_name) {
          state_ = State::ExtValueStart;
        } else if (c == ';') {
          state_ = State::ExtNameStart;
        } else if (ows) {
          state_ = after_name ? State::ExtNameBws : State::ExtBws;
        } else if (c == '\r' && state_ != State::ExtNameBws) {
          state_ = State::SizeLf;
        } else if (!tchar || (state_ != State::ExtName && state_ != State::ExtToken)) {
          return bad_ext(i, c);
        }
        break;
      }
      case State::ExtValueStart:
        if (c == '"') {
          state_ = State::ExtQuoted;
        } else if (tchar) {
          state_ = State::ExtToken;
        } else if (!ows) {
          return bad_ext(i, c);
        }
        break;
      case State::ExtQuoted:
        if (c == '"') {
          state_ = State::ExtAfterQuoted;
        } else if (c == '\\') {
          state_ = State::ExtQuotedPair;
        } else if (!is_field_byte(c)) {
          return bad_ext(i, c);
        }
        break;
      case State::ExtQuotedPair:
        if (!is_field_byte(c)) return bad_ext(i, c);
        state_ = State::ExtQuoted;
        break;
      case State::SizeLf:
        if (c != '\n') return fail(i, 400, "chunk size line not ended by CRLF");
        state_ = size_ == 0 ? State::TrailerStart : State::Data;
        break;
      case State::DataCr:
      case State::DataLf:
        if (c != (state_ == State::DataCr ? uint8_t{'\r'} : uint8_t{'\n'})) {
          return fail(i, 400, "chunk data not followed by CRLF");
        }
        state_ = state_ == State::DataCr ? State::DataLf : State::Size;
        break;
      case State::TrailerStart:
        if (c == '\r') {
          state_ = State::EndLf;
        } else if (tchar) {
          state_ = State::TrailerName;
        } else {
          return fail(i, 400,
                      ows ? std::string_view("obsolete line folding in trailer") : kBadTrailer);
        }
        break;
      case State::TrailerName:
        if (c == ':') {
          state_ = State::TrailerValue;
        } else if (!tchar) {
          return fail(i, 400, kBadTrailer);
        }
        break;
      case State::TrailerValue:
        if (c == '\r') {
          state_ = State::TrailerLf;
        } else if (!is_field_byte(c)) {
          return fail(i, 400, c == '\n' ? std::string_view("bare LF in trailer") : kBadTrailer);
        }
        break;
      case State::TrailerLf:
      case State::EndLf:
        if (c != '\n') return fail(i, 400, "bare CR in chunked body");
        if (state_ == State::EndLf) {
          state_ = State::Done;
          return Step{Status::Done, i + 1, {}, 0, {}};
        }
        state_ = State::TrailerStart;
        break;
      case State::Data:  // handled above
        break;
      case State::Done:
      case State::Failed:
        return fail(0, 400, "chunked body read past its end");
    }
    ++i;
  }
  return Step{Status::NeedMore, i, {}, 0, {}};
}
}  // namespace cdn::http
