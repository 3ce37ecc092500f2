// SPDX-License-Identifier: MIT
// Who may reach the admin surface (/.cdn/status, /.cdn/metrics, purges): an
// allow-list of CIDR blocks, and the token purges carry. Pure: addresses
// come in as sockaddr, the list as text, the token as bytes.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cdn::admin {

// One block: "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or
// /128). Bits past the prefix must be zero ("10.0.0.1/8" is refused: it
// reads as a mistake, not as 10.0.0.0/8).
struct Cidr {
  bool v6 = false;
  std::array<uint8_t, 16> bytes{};  // IPv4 in the first 4
  unsigned prefix = 0;
  bool operator==(const Cidr&) const = default;
};
std::optional<Cidr> parse_cidr(std::string_view text);
std::string to_string(const Cidr& c);

// The blocks of `[admin] allow`. An IPv4-mapped IPv6 peer (::ffff:a.b.c.d,
// what a dual-stack listener on :: sees) is matched as the IPv4 address.
class AllowList {
 public:
  AllowList() = default;
  explicit AllowList(std::vector<Cidr> blocks) : blocks_(std::move(blocks)) {}
  // "127.0.0.0/8, ::1" (commas and/or blanks); throws std::invalid_argument
  // naming the first entry that is not a block. An empty list allows no one.
  static AllowList parse(std::string_view list);
  static AllowList loopback();  // 127.0.0.0/8 and ::1

  bool allows(const sockaddr* peer) const;
  bool allows_v4(const uint8_t addr[4]) const;
  bool allows_v6(const uint8_t addr[16]) const;
  const std::vector<Cidr>& blocks() const { return blocks_; }
  std::string str() const;  // "127.0.0.0/8 ::1/128"

 private:
  std::vector<Cidr> blocks_;
};

// Constant-time in the bytes compared: how far a guess matches the token
// cannot be timed. The length of `expected` may leak (it is not secret in
// practice: tokens are long random strings of a fixed format); an empty
// `expected` matches nothing, so a missing token file never lets anyone in.
bool token_equals(std::string_view given, std::string_view expected);

// The token from a token file's text: the first line, blanks around it
// trimmed. Empty when the file holds no token.
std::string token_from_text(std::string_view text);

}  // namespace cdn::admin
