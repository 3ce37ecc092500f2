// SPDX-License-Identifier: MIT
// ASCII text helpers shared by the config reader, the HTTP code, the daemons
// and cdn-get. Pure, locale-free (std::tolower depends on the C locale, and
// HTTP and our config files are ASCII by definition), allocation-free except
// lowered().
#pragma once

#include <string>
#include <string_view>

namespace cdn::text {

constexpr char to_lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// Case-insensitive ASCII comparison (header names, tokens, config words).
bool iequals(std::string_view a, std::string_view b) noexcept;
// Whether s starts with prefix, ASCII case ignored.
bool istarts_with(std::string_view s, std::string_view prefix) noexcept;
// s with A-Z folded to a-z.
std::string lowered(std::string_view s);

// HTTP's optional whitespace (RFC 9110 5.6.3): space and horizontal tab.
constexpr bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }
// s without leading and trailing OWS: header values and list elements.
std::string_view trim_ows(std::string_view s) noexcept;
// s without leading and trailing ASCII white space (space, \t, \r, \n, \f,
// \v): config values, where a stray \r from a DOS editor is not data.
std::string_view trim(std::string_view s) noexcept;

}  // namespace cdn::text
