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

// Content-Type for a file name by its extension ("text/html; charset=utf-8"),
// "application/octet-stream" when unknown.
std::string_view mime_type(std::string_view filename);

}  // namespace cdn::http
