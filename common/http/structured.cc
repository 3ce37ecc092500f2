// SPDX-License-Identifier: MIT
#include "common/http/structured.hpp"

#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace cdn::http::sf {

namespace {

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  // Calls on_member(key, value) for each member; false on a syntax error.
  template <typename F>
  bool dictionary(F&& on_member) {
    skip_sp();
    if (at_end()) return true;  // an empty field is an empty dictionary
    for (;;) {
      std::string_view key;
      if (!parse_key(key)) return false;
      Item v;
      if (peek() == '=') {
        ++pos_;
        if (peek() == '(') {
          if (!inner_list()) return false;
          v.type = Item::Type::InnerList;
        } else if (!bare_item(&v)) {
          return false;
        }
      }  // else the value is Boolean true
      if (!parameters()) return false;
      on_member(key, std::move(v));
      skip_ows();
      if (at_end()) return true;
      if (peek() != ',') return false;
      ++pos_;
      skip_ows();
      if (at_end()) return false;  // a trailing comma
    }
  }

  // Leading and trailing SP are not part of the field (RFC 8941 4.2).
  void strip_trailing_sp() {
    while (!s_.empty() && s_.back() == ' ') s_.remove_suffix(1);
  }

 private:
  static bool lcalpha(char c) { return c >= 'a' && c <= 'z'; }
  static bool alpha(char c) { return lcalpha(c) || (c >= 'A' && c <= 'Z'); }
  static bool digit(char c) { return c >= '0' && c <= '9'; }
  static bool tchar(char c) {
    return alpha(c) || digit(c) ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  }

  bool at_end() const { return pos_ >= s_.size(); }
  char peek() const { return at_end() ? '\0' : s_[pos_]; }
  void skip_sp() {
    while (peek() == ' ') ++pos_;
  }
  void skip_ows() {
    while (peek() == ' ' || peek() == '\t') ++pos_;
  }

  bool parse_key(std::string_view& key) {
    const size_t begin = pos_;
    if (!lcalpha(peek()) && peek() != '*') return false;
    while (!at_end()) {
      const char c = peek();
      if (!lcalpha(c) && !digit(c) && c != '_' && c != '-' && c != '.' && c != '*') break;
      ++pos_;
    }
    key = s_.substr(begin, pos_ - begin);
    return true;
  }

  bool parameters() {
    while (peek() == ';') {
      ++pos_;
      skip_sp();
      std::string_view key;
      if (!parse_key(key)) return false;
      if (peek() == '=') {
        ++pos_;
        if (!bare_item(nullptr)) return false;
      }
    }
    return true;
  }

  bool inner_list() {
    ++pos_;  // '('
    for (;;) {
      skip_sp();
      if (peek() == ')') {
        ++pos_;
        return true;
      }
      if (!bare_item(nullptr) || !parameters()) return false;
      if (peek() != ' ' && peek() != ')') return false;
    }
  }

  bool bare_item(Item* out) {
    const char c = peek();
    Item scratch;
    Item& it = out != nullptr ? *out : scratch;
    const size_t begin = pos_;
    bool ok = false;
    if (c == '-' || digit(c)) {
      ok = number(it);
    } else if (c == '"') {
      it.type = Item::Type::String;
      ok = string();
      if (ok) it.text = s_.substr(begin + 1, pos_ - begin - 2);
    } else if (c == ':') {
      it.type = Item::Type::Bytes;
      ok = byte_sequence(out);
    } else if (c == '?') {
      it.type = Item::Type::Boolean;
      ok = boolean();
      it.boolean = ok && s_[pos_ - 1] == '1';
    } else if (c == '*' || alpha(c)) {
      it.type = Item::Type::Token;
      ok = token();
      it.text = s_.substr(begin, pos_ - begin);
    }
    return ok;
  }

  // Integer (at most 15 digits) or Decimal (at most 12 integer and 3
  // fractional digits, not ending in '.').
  bool number(Item& it) {
    const size_t begin = pos_;
    const bool negative = peek() == '-';
    if (negative) ++pos_;
    size_t int_digits = 0;
    while (digit(peek())) {
      ++pos_;
      ++int_digits;
    }
    if (int_digits == 0) return false;
    if (peek() != '.') {
      if (int_digits > 15) return false;
      int64_t v = 0;
      for (size_t i = pos_ - int_digits; i < pos_; ++i) v = v * 10 + (s_[i] - '0');
      it.type = Item::Type::Integer;
      it.integer = negative ? -v : v;
      return true;
    }
    if (int_digits > 12) return false;
    ++pos_;
    size_t frac_digits = 0;
    while (digit(peek())) {
      ++pos_;
      ++frac_digits;
    }
    it.type = Item::Type::Decimal;
    it.text = s_.substr(begin, pos_ - begin);
    return frac_digits >= 1 && frac_digits <= 3;
  }

  bool string() {
    ++pos_;  // '"'
    while (!at_end()) {
      const char c = s_[pos_++];
      if (c == '\\') {
        if (at_end() || (peek() != '"' && peek() != '\\')) return false;
        ++pos_;
      } else if (c == '"') {
        return true;
      } else if (c < 0x20 || c > 0x7e) {
        return false;
      }
    }
    return false;
  }

  bool token() {
    ++pos_;
    while (!at_end() && (tchar(peek()) || peek() == ':' || peek() == '/')) ++pos_;
    return true;
  }

  bool boolean() {
    ++pos_;  // '?'
    if (peek() != '0' && peek() != '1') return false;
    ++pos_;
    return true;
  }

  static int sextet(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (digit(c)) return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  }

  // Base64 between colons. Padding may be left out (RFC 8941 4.2.7 asks
  // parsers not to insist on it), but '=' only at the end, and a group of
  // one character (6 bits: no whole byte) is malformed.
  bool byte_sequence(Item* out) {
    ++pos_;  // ':'
    const size_t close = s_.find(':', pos_);
    if (close == std::string_view::npos) return false;
    std::string_view b64 = s_.substr(pos_, close - pos_);
    pos_ = close + 1;
    size_t pad = 0;
    while (!b64.empty() && b64.back() == '=' && pad < 2) {
      b64.remove_suffix(1);
      ++pad;
    }
    if (pad > 0 && (b64.size() + pad) % 4 != 0) return false;
    if (b64.size() % 4 == 1) return false;
    std::vector<unsigned char> bytes;
    bytes.reserve(b64.size() * 3 / 4);
    uint32_t acc = 0;
    int bits = 0;
    for (const char c : b64) {
      const int v = sextet(c);
      if (v < 0) return false;
      acc = (acc << 6) | static_cast<uint32_t>(v);
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        bytes.push_back(static_cast<unsigned char>((acc >> bits) & 0xff));
      }
    }
    if (out != nullptr) out->bytes = std::move(bytes);
    return true;
  }

  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

bool parse_dictionary(std::string_view field,
                      const std::function<void(std::string_view, Item)>& on_member) {
  Parser p(field);
  p.strip_trailing_sp();
  return p.dictionary(on_member);
}

}  // namespace cdn::http::sf
