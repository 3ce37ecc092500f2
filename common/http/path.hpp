// SPDX-License-Identifier: MIT
// Mapping a request-target to a safe content path. Pure; fuzzed.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace cdn::http {

// From an origin-form request-target ("/a/./b/../c%20d?x=1") to a normalised
// absolute path ("/a/c d"): the query and fragment are dropped, %XX decoded
// once, "." and ".." segments resolved, repeated slashes collapsed.
// nullopt (answer 400) for: not starting with '/', a bad %-escape, a NUL or
// control byte, a backslash, or a ".." that would climb above the root.
std::optional<std::string> normalize_path(std::string_view target);

// The query string of a request-target without the '?', or "" when none.
std::string_view query_of(std::string_view target);
// Value of one parameter of a query string ("path=/x&y=1"), %-decoded; nullopt when absent.
std::optional<std::string> query_param(std::string_view query, std::string_view name);
// %-encode a path for use in a URL (keeps unreserved characters and '/').
std::string encode_path(std::string_view path);
// The same, appended to `out` (a reused buffer allocates nothing).
void append_encoded_path(std::string& out, std::string_view path);
// Appends a request's query (without its '?') to a URL that goes into a
// header or a list (Location, CDN-Fallback): RFC 3986 query characters are
// kept, except ',' (it separates the URLs of a list), and so is a '%' that
// starts a valid escape; every other byte is %XX-encoded. Whatever the input,
// `out` gains a valid URI query with no ',', no whitespace and no byte outside
// ASCII, so no byte of a request can end a URL or add one to a list.
void append_encoded_query(std::string& out, std::string_view query);
// True when `target` is a valid origin-form URI: '/', RFC 3986 path
// characters, optionally '?' and query characters, every '%' starting a valid
// escape. False for a fragment, whitespace, a control byte, a byte outside
// ASCII, or any other character RFC 3986 does not allow there.
bool is_uri_target(std::string_view target);

}  // namespace cdn::http
