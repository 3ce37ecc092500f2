// SPDX-License-Identifier: MIT
// RFC 8941 Structured Field Dictionaries, the one parser for every field of
// that shape (Repr-Digest, CDN-Cache-Control and other RFC 9213 targeted
// fields). Every bare item, inner list and parameter is parsed (to know where
// it ends and to refuse what is malformed); members are handed out with the
// type and value of their bare item. Pure; input length is the caller's
// header limit.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

namespace cdn::http::sf {

struct Item {
  enum class Type { Integer, Decimal, String, Token, Bytes, Boolean, InnerList };
  Type type = Type::Boolean;
  int64_t integer = 0;               // Integer
  bool boolean = true;               // Boolean (a member without "=" is true)
  std::string_view text;             // String (escapes kept as sent), Token, Decimal
  std::vector<unsigned char> bytes;  // Bytes, decoded
};

// Calls on_member(key, item) for each member in order (a repeated key is
// reported again: RFC 8941 4.2.2 has the last one count). False when the
// field is not a valid Dictionary (RFC 8941 4.2: the field is then ignored
// whole). Leading and trailing spaces are not part of the field.
bool parse_dictionary(std::string_view field,
                      const std::function<void(std::string_view, Item)>& on_member);

}  // namespace cdn::http::sf
