// SPDX-License-Identifier: MIT
// Pieces the request parser, the response parser and the chunked decoder
// share; internal to common/http (not installed, not for other components).
//
// Both parsers drive http-parser and only add what it does not check:
// limits, Host rules, transfer-coding rules and (for requests) a raw scan of
// the head for bare LF / bare CR / obs-fold. The decisions that differ
// between requests and responses open request_parser.cc and
// response_parser.cc.
#pragma once

#include <string>
#include <string_view>

#include "common/text/text.hpp"

namespace cdn::http::detail {

// OWS trimmed in place, so a reused message keeps its capacity.
inline void trim(std::string& s) {
  const std::string_view t = text::trim_ows(s);
  const auto begin = static_cast<size_t>(t.data() - s.data());
  const size_t size = t.size();
  s.erase(begin + size);
  s.erase(0, begin);
}

constexpr bool is_hex(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

}  // namespace cdn::http::detail
