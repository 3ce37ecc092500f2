// SPDX-License-Identifier: MIT
// A slow, plain reading of chunked framing (RFC 9112 7.1) for the fuzzers to
// hold ChunkedDecoder against. Written apart from it on purpose: recursive
// descent over the whole remaining input, one grammar rule a function,
// rather than a byte-at-a-time state machine. Same decisions as the decoder
// (see chunked.cc): CRLF only, at most 16 hex digits, a chunk that would take
// the data over max_data refused once its size is read, extension and
// trailer bytes (line ends not counted) at most max_meta.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/http/message.hpp"

namespace cdn::fuzz {

struct ChunkedVerdict {
  enum Kind { Ok, Bad, Short } kind = Short;  // Short: a valid prefix that ended early
  size_t end = 0;                             // for Ok: bytes of the body
};

class ChunkedReference {
 public:
  ChunkedReference(std::string_view in, uint64_t max_data, size_t max_meta)
      : in_(in), data_left_(max_data), meta_left_(max_meta) {}

  ChunkedVerdict read() {
    const R r = body();
    if (r == R::Ok) return {ChunkedVerdict::Ok, pos_};
    return {r == R::Bad ? ChunkedVerdict::Bad : ChunkedVerdict::Short, 0};
  }

 private:
  enum class R { Ok, Bad, Short };
#define CDN_REF_TRY(step)                            \
  do {                                               \
    if (const R r_ = (step); r_ != R::Ok) return r_; \
  } while (0)

  static bool hex(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  }
  static bool tchar(unsigned char c) { return http::is_token_char(c); }
  static bool ws(unsigned char c) { return c == ' ' || c == '\t'; }
  // HTAB / SP / VCHAR / obs-text
  static bool field(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

  // The next byte, or -1 at the end of the input.
  int peek() const { return pos_ < in_.size() ? static_cast<unsigned char>(in_[pos_]) : -1; }

  // One byte for which `ok` holds, counted against max_meta when `meta`.
  R take(bool (*ok)(unsigned char), bool meta) {
    if (peek() < 0) return R::Short;
    if (!ok(static_cast<unsigned char>(in_[pos_]))) return R::Bad;
    if (meta) {
      if (meta_left_ == 0) return R::Bad;
      --meta_left_;
    }
    ++pos_;
    return R::Ok;
  }
  R literal(char want, bool meta) {
    if (peek() < 0) return R::Short;
    if (peek() != static_cast<unsigned char>(want)) return R::Bad;
    return take([](unsigned char) { return true; }, meta);
  }
  R crlf() {
    CDN_REF_TRY(literal('\r', false));
    return literal('\n', false);
  }
  // *(SP / HTAB): stops at the first other byte; the input ending is Short.
  R bws() {
    for (;;) {
      if (peek() < 0) return R::Short;
      if (!ws(static_cast<unsigned char>(peek()))) return R::Ok;
      CDN_REF_TRY(take(ws, true));
    }
  }
  R token() {
    CDN_REF_TRY(take(tchar, true));
    for (;;) {
      if (peek() < 0) return R::Short;
      if (!tchar(static_cast<unsigned char>(peek()))) return R::Ok;
      CDN_REF_TRY(take(tchar, true));
    }
  }
  R quoted_string() {
    CDN_REF_TRY(literal('"', true));
    for (;;) {
      if (peek() < 0) return R::Short;
      if (peek() == '"') return literal('"', true);
      if (peek() == '\\') CDN_REF_TRY(literal('\\', true));
      CDN_REF_TRY(take(field, true));
    }
  }
  // chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
  R chunk_ext() {
    for (;;) {
      if (peek() < 0) return R::Short;
      if (peek() == '\r') return R::Ok;
      CDN_REF_TRY(bws());
      CDN_REF_TRY(literal(';', true));
      CDN_REF_TRY(bws());
      CDN_REF_TRY(token());
      const size_t pos = pos_;
      const size_t meta = meta_left_;
      CDN_REF_TRY(bws());
      if (peek() == '=') {
        CDN_REF_TRY(literal('=', true));
        CDN_REF_TRY(bws());
        CDN_REF_TRY(peek() == '"' ? quoted_string() : token());
      } else {
        // No value: that BWS can only be the one before the next ';'.
        pos_ = pos;
        meta_left_ = meta;
      }
    }
  }
  R chunk_size(uint64_t& size) {
    size = 0;
    for (int digits = 0;; ++digits) {
      if (peek() < 0) return R::Short;
      if (!hex(static_cast<unsigned char>(peek()))) return digits == 0 ? R::Bad : R::Ok;
      if (digits == 16) return R::Bad;
      const int c = peek();
      size = size * 16 + static_cast<uint64_t>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
      ++pos_;
    }
  }
  // field-line = field-name ":" field-value (OWS is field bytes too)
  R trailer_line() {
    CDN_REF_TRY(token());
    CDN_REF_TRY(literal(':', true));
    for (;;) {
      if (peek() < 0) return R::Short;
      if (peek() == '\r') return crlf();
      CDN_REF_TRY(take(field, true));
    }
  }
  // chunked-body = *chunk last-chunk trailer-section CRLF
  R body() {
    for (;;) {
      uint64_t size = 0;
      CDN_REF_TRY(chunk_size(size));
      if (size > data_left_) return R::Bad;
      data_left_ -= size;
      CDN_REF_TRY(chunk_ext());
      CDN_REF_TRY(crlf());
      if (size == 0) break;
      if (in_.size() - pos_ < size) return R::Short;
      pos_ += static_cast<size_t>(size);
      CDN_REF_TRY(crlf());
    }
    for (;;) {
      if (peek() < 0) return R::Short;
      if (peek() == '\r') return crlf();
      CDN_REF_TRY(trailer_line());
    }
  }
#undef CDN_REF_TRY

  std::string_view in_;
  size_t pos_ = 0;
  uint64_t data_left_;
  size_t meta_left_;
};

}  // namespace cdn::fuzz
