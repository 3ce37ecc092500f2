// SPDX-License-Identifier: MIT
#include "common/http/path.hpp"

#include <array>
#include <cstring>

#include "common/http/message.hpp"

namespace cdn::http {

namespace {

// The bytes a path keeps as they are, decoded or encoded (RFC 3986
// unreserved, and '/').
constexpr std::array<bool, 256> kPlain = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 256; ++c) {
    t[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
           c == '.' || c == '_' || c == '~' || c == '/';
  }
  return t;
}();

// RFC 3986 query characters: pchar (unreserved, sub-delims, ':', '@'), '/'
// and '?'. '%' is not among them: it is one only when a valid escape follows.
constexpr std::array<bool, 256> kQueryChar = [] {
  std::array<bool, 256> t = kPlain;
  for (unsigned char c : std::string_view("!$&'()*+,;=:@?")) t[c] = true;
  return t;
}();

// What a query keeps as it is in a URL of a list: ',' would end the URL.
constexpr std::array<bool, 256> kListQuery = [] {
  std::array<bool, 256> t = kQueryChar;
  t[','] = false;
  return t;
}();

bool is_plain(unsigned char c) { return kPlain[c]; }

// Length of the run of bytes at the start of `s` that `table` keeps.
size_t run_of(const std::array<bool, 256>& table, std::string_view s) {
  size_t i = 0;
  while (i < s.size() && table[static_cast<unsigned char>(s[i])]) ++i;
  return i;
}

size_t plain_run(std::string_view s) { return run_of(kPlain, s); }

void append_escape(std::string& out, unsigned char c) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  const char escaped[3] = {'%', kHex[c >> 4], kHex[c & 0xf]};
  out.append(escaped, 3);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// True when `s` starts with '%' and two hex digits.
bool starts_with_escape(std::string_view s) {
  return s.size() >= 3 && s[0] == '%' && hex_value(s[1]) >= 0 && hex_value(s[2]) >= 0;
}

// %XX-decodes `in` once into `out`; `plus_is_space` for query strings
// (application/x-www-form-urlencoded). False on a malformed escape.
bool percent_decode(std::string_view in, bool plus_is_space, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '%') {
      if (in.size() - i < 3) return false;
      const int hi = hex_value(in[i + 1]);
      const int lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return true;
}

}  // namespace

std::optional<std::string> normalize_path(std::string_view target) {
  if (target.empty() || target.front() != '/') return std::nullopt;

  // Most paths need nothing done: only plain bytes (so no escape and no
  // control byte), no "//" and no "/." (which starts every dot segment).
  // Those are their own normal form. One pass over the bytes finds that and
  // the path's end ('?' and '#' are not plain), in place of a search per
  // question: find_first_of alone calls memchr once per byte.
  size_t end = 1;
  bool own_form = true;
  while (end < target.size() && is_plain(static_cast<unsigned char>(target[end]))) {
    if (target[end - 1] == '/' && (target[end] == '/' || target[end] == '.')) own_form = false;
    ++end;
  }
  if (end < target.size() && target[end] != '?' && target[end] != '#') {
    own_form = false;  // a byte to decode or refuse
    end = target.find_first_of("?#", end);
  }
  const std::string_view raw = target.substr(0, end);
  if (own_form) return std::string(raw);

  // Decode first, then resolve dot segments: "%2e%2e" and "..%2f" must be seen
  // as the ".." and "../" they become, or they would escape the root when the
  // decoded name reaches the file system. Decoding once means "%252e" stays
  // the literal name "%2e", which is harmless.
  std::string decoded;
  if (!percent_decode(raw, false, decoded)) return std::nullopt;
  for (unsigned char c : decoded) {
    if (c < 0x20 || c == 0x7f || c == '\\') return std::nullopt;
  }

  // Dot segments are resolved in place: the result is never longer than the
  // decoded path (each kept segment keeps the '/' before it), so `decoded`
  // is rewritten front to back and no second buffer is needed. `w` is the end
  // of the result, `depth` its number of segments.
  std::string& out = decoded;
  const size_t n = decoded.size();
  size_t w = 1;  // decoded[0] == '/' (an encoded leading slash is impossible: raw starts with '/')
  size_t depth = 0;
  bool trailing_slash = false;
  size_t pos = 1;
  while (pos <= n) {
    size_t slash = decoded.find('/', pos);
    if (slash == std::string::npos) slash = n;
    const size_t len = slash - pos;
    const bool last = slash == n;
    if (len == 0 || (len == 1 && decoded[pos] == '.')) {
      // "//" collapses; "/a/." names the directory "/a/".
      trailing_slash = last;
    } else if (len == 2 && decoded[pos] == '.' && decoded[pos + 1] == '.') {
      if (depth == 0) return std::nullopt;  // would climb above the root
      const size_t prev = out.rfind('/', w - 1);
      w = prev == 0 ? 1 : prev;
      --depth;
      trailing_slash = last;
    } else {
      if (depth > 0) out[w++] = '/';
      if (w != pos) std::memmove(out.data() + w, out.data() + pos, len);  // w < pos: left
      w += len;
      ++depth;
      trailing_slash = false;
    }
    pos = slash + 1;
  }
  if (trailing_slash && depth > 0) out[w++] = '/';
  out.resize(w);
  return std::move(out);
}

std::string_view query_of(std::string_view target) {
  const size_t q = target.find('?');
  if (q == std::string_view::npos) return {};
  std::string_view query = target.substr(q + 1);
  return query.substr(0, query.find('#'));
}

std::optional<std::string> query_param(std::string_view query, std::string_view name) {
  std::string key;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty()) continue;
    const size_t eq = pair.find('=');
    const std::string_view raw_key = pair.substr(0, eq);
    if (!percent_decode(raw_key, true, key) || key != name) continue;
    const std::string_view raw_value =
        eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    std::string value;
    if (!percent_decode(raw_value, true, value)) return std::nullopt;
    return value;
  }
  return std::nullopt;
}

std::string encode_path(std::string_view path) {
  std::string out;
  append_encoded_path(out, path);
  return out;
}

void append_encoded_path(std::string& out, std::string_view path) {
  out.reserve(out.size() + path.size());
  // Runs of plain bytes are appended whole; only the others are escaped.
  while (!path.empty()) {
    const size_t run = plain_run(path);
    out.append(path.data(), run);
    if (run == path.size()) break;
    append_escape(out, static_cast<unsigned char>(path[run]));
    path.remove_prefix(run + 1);
  }
}

void append_encoded_query(std::string& out, std::string_view query) {
  // The common query needs nothing done: one pass over it says so, and it is
  // appended whole.
  size_t run = run_of(kListQuery, query);
  if (run == query.size()) {
    out.append(query);
    return;
  }
  out.reserve(out.size() + query.size() + 8);
  for (;;) {
    out.append(query.data(), run);
    query.remove_prefix(run);
    if (query.empty()) return;
    if (starts_with_escape(query)) {
      out.append(query.data(), 3);
      query.remove_prefix(3);
    } else {
      append_escape(out, static_cast<unsigned char>(query.front()));
      query.remove_prefix(1);
    }
    run = run_of(kListQuery, query);
  }
}

bool is_uri_target(std::string_view target) {
  if (target.empty() || target.front() != '/') return false;
  // Path and query differ only by '?', which both take once the query began.
  while (!target.empty()) {
    target.remove_prefix(run_of(kQueryChar, target));
    if (target.empty()) break;
    if (!starts_with_escape(target)) return false;
    target.remove_prefix(3);
  }
  return true;
}

}  // namespace cdn::http
