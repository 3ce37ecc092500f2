// SPDX-License-Identifier: MIT
// HTTP/1.1 message types shared by the server and the client side.
// Pure data: no I/O. A Request/Response is reused across messages on one
// connection (clear() keeps capacity), so steady-state parsing allocates nothing.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/text/text.hpp"

namespace cdn::http {

struct Header {
  std::string name;   // as received (case preserved)
  std::string value;  // leading/trailing whitespace trimmed
};

namespace detail {
// One bit per byte value: set for tchar. A table, because the parser and the
// head writer ask once per byte of every method and header name.
constexpr std::array<bool, 256> make_tchar_table() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[static_cast<size_t>(c)] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[static_cast<size_t>(c)] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[static_cast<size_t>(c)] = true;
  for (unsigned char c : std::string_view("!#$%&'*+-.^_`|~")) t[c] = true;
  return t;
}
inline constexpr std::array<bool, 256> kTchar = make_tchar_table();
}  // namespace detail

// RFC 9110 tchar: the characters of a token (method, header name).
constexpr bool is_token_char(unsigned char c) noexcept { return detail::kTchar[c]; }

// Header names and tokens compare case-insensitively; the one definition is
// in common/text, named here so HTTP code reads http::iequals.
using text::iequals;

struct Request {
  std::string method;  // "GET", "HEAD", ... as on the wire
  // request-target as on the wire, e.g. "/a/b?x=1"; an absolute-form one
  // ("http://h/a") reduced by the parser to origin-form ("/a", h in Host).
  std::string target;
  int version_major = 1;
  int version_minor = 1;
  std::vector<Header> headers;
  bool keep_alive = true;  // from version + Connection header
  std::optional<uint64_t> content_length;
  bool chunked = false;
  // The body (de-chunked), at most Limits::max_body bytes: a gateway
  // forwards it to its origin.
  std::string body;

  // First header with this name (case-insensitive), or nullopt.
  std::optional<std::string_view> header(std::string_view name) const;
  void clear();
};

struct Response {
  int status = 0;
  std::string reason;
  int version_major = 1;
  int version_minor = 1;
  std::vector<Header> headers;
  bool keep_alive = true;
  std::optional<uint64_t> content_length;
  bool chunked = false;

  std::optional<std::string_view> header(std::string_view name) const;
  void clear();
};

// Standard reason phrase for a status code ("Not Found"); "Unknown" otherwise.
std::string_view reason_phrase(int status) noexcept;

}  // namespace cdn::http
