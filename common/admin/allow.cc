// SPDX-License-Identifier: MIT
#include "common/admin/allow.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <charconv>
#include <cstring>
#include <stdexcept>

namespace cdn::admin {

namespace {

bool prefix_matches(const uint8_t* a, const uint8_t* b, unsigned prefix) {
  const unsigned whole = prefix / 8;
  if (std::memcmp(a, b, whole) != 0) return false;
  const unsigned rest = prefix % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[whole] & mask) == (b[whole] & mask);
}

bool host_bits_zero(const Cidr& c) {
  const unsigned size = c.v6 ? 16 : 4;
  for (unsigned bit = c.prefix; bit < size * 8; ++bit) {
    if ((c.bytes[bit / 8] >> (7 - bit % 8)) & 1) return false;
  }
  return true;
}

constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool is_blank_or_comma(char c) { return c == ' ' || c == '\t' || c == ','; }

}  // namespace

std::optional<Cidr> parse_cidr(std::string_view text) {
  const size_t slash = text.find('/');
  const std::string addr(text.substr(0, slash));
  if (addr.empty() || addr.size() > INET6_ADDRSTRLEN) return std::nullopt;
  Cidr c;
  if (addr.find(':') != std::string::npos) {
    c.v6 = true;
    if (inet_pton(AF_INET6, addr.c_str(), c.bytes.data()) != 1) return std::nullopt;
  } else if (inet_pton(AF_INET, addr.c_str(), c.bytes.data()) != 1) {
    return std::nullopt;
  }
  const unsigned max = c.v6 ? 128 : 32;
  c.prefix = max;
  if (slash != std::string_view::npos) {
    const std::string_view p = text.substr(slash + 1);
    unsigned v = 0;
    const auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
    if (p.empty() || p.size() > 3 || ec != std::errc() || end != p.data() + p.size() || v > max) {
      return std::nullopt;
    }
    c.prefix = v;
  }
  if (!host_bits_zero(c)) return std::nullopt;
  return c;
}

std::string to_string(const Cidr& c) {
  char buf[INET6_ADDRSTRLEN] = {0};
  inet_ntop(c.v6 ? AF_INET6 : AF_INET, c.bytes.data(), buf, sizeof buf);
  return std::string(buf) + "/" + std::to_string(c.prefix);
}

AllowList AllowList::parse(std::string_view list) {
  std::vector<Cidr> blocks;
  size_t i = 0;
  while (i < list.size()) {
    while (i < list.size() && is_blank_or_comma(list[i])) ++i;
    size_t end = i;
    while (end < list.size() && !is_blank_or_comma(list[end])) ++end;
    if (end == i) break;
    const std::string_view item = list.substr(i, end - i);
    const auto c = parse_cidr(item);
    if (!c) {
      throw std::invalid_argument("'" + std::string(item) +
                                  "' is not an address or a CIDR block (e.g. 10.0.0.0/8, ::1)");
    }
    blocks.push_back(*c);
    i = end;
  }
  return AllowList(std::move(blocks));
}

AllowList AllowList::loopback() { return parse("127.0.0.0/8 ::1"); }

bool AllowList::allows_v4(const uint8_t addr[4]) const {
  for (const Cidr& c : blocks_) {
    if (!c.v6 && prefix_matches(addr, c.bytes.data(), c.prefix)) return true;
  }
  return false;
}

bool AllowList::allows_v6(const uint8_t addr[16]) const {
  if (std::memcmp(addr, kMappedPrefix, sizeof kMappedPrefix) == 0) return allows_v4(addr + 12);
  for (const Cidr& c : blocks_) {
    if (c.v6 && prefix_matches(addr, c.bytes.data(), c.prefix)) return true;
  }
  return false;
}

bool AllowList::allows(const sockaddr* peer) const {
  if (peer == nullptr) return false;
  if (peer->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(peer);
    uint8_t a[4];
    std::memcpy(a, &in->sin_addr, 4);
    return allows_v4(a);
  }
  if (peer->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(peer);
    uint8_t a[16];
    std::memcpy(a, &in6->sin6_addr, 16);
    return allows_v6(a);
  }
  return false;
}

std::string AllowList::str() const {
  std::string out;
  for (const Cidr& c : blocks_) {
    if (!out.empty()) out.push_back(' ');
    out += to_string(c);
  }
  return out;
}

bool token_equals(std::string_view given, std::string_view expected) {
  if (expected.empty()) return false;
  // Every byte of `given` is looked at whatever its length, so that the
  // time depends on the guess's length only.
  unsigned diff = given.size() != expected.size() ? 1U : 0U;
  for (size_t i = 0; i < given.size(); ++i) {
    const auto e = static_cast<unsigned char>(expected[i % expected.size()]);
    diff |= static_cast<unsigned>(static_cast<unsigned char>(given[i]) ^ e);
  }
  // Keep the compiler from turning the loop into an early exit.
  volatile unsigned sink = diff;
  return sink == 0;
}

std::string token_from_text(std::string_view text) {
  const size_t nl = text.find('\n');
  std::string_view line = text.substr(0, nl);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
    line.remove_suffix(1);
  }
  while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
  return std::string(line);
}

}  // namespace cdn::admin
