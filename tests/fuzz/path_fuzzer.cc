// SPDX-License-Identifier: MIT
// normalize_path is the gate to the file system: whatever it returns must be
// an absolute path with no dot segments, no empty segments, no backslash and
// no control byte, and be a fixed point of encode+normalize. The query
// encoder must turn any bytes into a valid URI query that cannot split a list.
#include <cstdint>
#include <string>
#include <string_view>

#include "common/http/mime.hpp"
#include "common/http/path.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace {

void check_safe(const std::string& p) {
  CDN_FUZZ_CHECK(!p.empty() && p.front() == '/');
  CDN_FUZZ_CHECK(p.find("//") == std::string::npos);
  CDN_FUZZ_CHECK(p.find('\\') == std::string::npos);
  for (unsigned char c : p) CDN_FUZZ_CHECK(c >= 0x20 && c != 0x7f);
  // No "." or ".." segment anywhere.
  size_t pos = 1;
  while (pos <= p.size()) {
    size_t slash = p.find('/', pos);
    if (slash == std::string::npos) slash = p.size();
    const std::string_view seg(p.data() + pos, slash - pos);
    CDN_FUZZ_CHECK(seg != "." && seg != "..");
    pos = slash + 1;
  }
  const auto again = cdn::http::normalize_path(cdn::http::encode_path(p));
  CDN_FUZZ_CHECK(again.has_value() && *again == p);
}

// A path of plain bytes only (RFC 3986 unreserved and '/'), with no "//" and
// no "/.", is its own normal form: normalize_path takes it whole, by a
// one-pass shortcut that this spells out the slow way.
bool own_normal_form(std::string_view raw) {
  if (raw.empty() || raw.front() != '/') return false;
  for (unsigned char c : raw) {
    const bool plain = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                       c == '-' || c == '.' || c == '_' || c == '~' || c == '/';
    if (!plain) return false;
  }
  return raw.find("//") == std::string_view::npos && raw.find("/.") == std::string_view::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = cdn::fuzz::as_view(data, size);
  const auto normal = cdn::http::normalize_path(in);
  if (normal) check_safe(*normal);
  const std::string_view raw = in.substr(0, in.find_first_of("?#"));
  if (own_normal_form(raw)) CDN_FUZZ_CHECK(normal.has_value() && *normal == raw);

  const std::string_view query = cdn::http::query_of(in);
  CDN_FUZZ_CHECK(query.size() <= in.size());
  for (std::string_view name : {"path", "x", ""}) {
    if (auto v = cdn::http::query_param(query, name)) {
      // The balancer's /.cdn/locate?path=... feeds the value on to normalize_path.
      if (auto p = cdn::http::normalize_path(*v)) check_safe(*p);
    }
  }
  // Whatever a request holds, the balancer's URLs stay valid URIs with no
  // ',' (the CDN-Fallback list's separator) and no whitespace.
  std::string encoded = "/?";
  cdn::http::append_encoded_query(encoded, in);
  CDN_FUZZ_CHECK(cdn::http::is_uri_target(encoded));
  CDN_FUZZ_CHECK(encoded.find_first_of(", \t\r\n") == std::string::npos);
  (void)cdn::http::mime_type(in);
  // The same bytes as a mime.types file: whatever it holds, a type that comes
  // out of it can go into a header as it is (no CR, LF or other control byte).
  const auto types = cdn::http::MimeTypes::parse(in);
  for (const std::string_view name : {"a.html", "a.txt", "x.bin", "a.a"}) {
    const std::string t = types.content_type(name);
    for (const char c : t) CDN_FUZZ_CHECK(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
  }
  return 0;
}
