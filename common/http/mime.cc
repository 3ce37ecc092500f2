// SPDX-License-Identifier: MIT
#include "common/http/mime.hpp"

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>

#include "common/text/text.hpp"

namespace cdn::http {

namespace {

constexpr std::string_view kOctetStream = "application/octet-stream";
constexpr std::string_view kSpace = " \t\r\f\v";
constexpr size_t kMaxFileBytes = 4 * 1024 * 1024;
// Longer names are not extensions anyone serves by; the bound keeps a stray
// binary file from filling the table with junk keys.
constexpr size_t kMaxExtension = 32;

// RFC 6838 4.2 restricted-name characters: what may go into a Content-Type
// header without quoting (so no file can inject a header or a parameter).
bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::strchr("!#$&-^_.+", c) != nullptr;
}

bool is_name(std::string_view s) {
  if (s.empty() || s.size() > 127) return false;
  for (const char c : s) {
    if (!is_name_char(c)) return false;
  }
  return true;
}

bool is_media_type(std::string_view t) {
  const size_t slash = t.find('/');
  return slash != std::string_view::npos && is_name(t.substr(0, slash)) &&
         is_name(t.substr(slash + 1));
}

bool is_extension(std::string_view e) {
  if (e.empty() || e.size() > kMaxExtension) return false;
  for (const char c : e) {
    if (c == '.' || c == '/' || !is_name_char(c)) return false;
  }
  return true;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

MimeTypes make_builtin() {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 27> kTypes{{
      {"html", "text/html"},        {"htm", "text/html"},       {"css", "text/css"},
      {"js", "text/javascript"},    {"mjs", "text/javascript"}, {"json", "application/json"},
      {"txt", "text/plain"},        {"xml", "application/xml"}, {"svg", "image/svg+xml"},
      {"csv", "text/csv"},          {"md", "text/markdown"},    {"png", "image/png"},
      {"jpg", "image/jpeg"},        {"jpeg", "image/jpeg"},     {"gif", "image/gif"},
      {"webp", "image/webp"},       {"ico", "image/x-icon"},    {"wasm", "application/wasm"},
      {"pdf", "application/pdf"},   {"zip", "application/zip"}, {"gz", "application/gzip"},
      {"tar", "application/x-tar"}, {"mp4", "video/mp4"},       {"webm", "video/webm"},
      {"mp3", "audio/mpeg"},        {"woff", "font/woff"},      {"woff2", "font/woff2"},
  }};
  std::string text;
  for (const auto& [ext, type] : kTypes) {
    text += std::string(type) + " " + std::string(ext) + "\n";
  }
  static const MimeTypes kEmpty;
  return MimeTypes::parse(text, kEmpty);
}

std::mutex installed_mu;
std::shared_ptr<const MimeTypes> installed;  // guarded by installed_mu; null: builtin()

}  // namespace

const MimeTypes& MimeTypes::builtin() {
  static const MimeTypes table = make_builtin();
  return table;
}

MimeTypes MimeTypes::parse(std::string_view text, const MimeTypes& fallback) {
  MimeTypes out;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? text.npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    if (const size_t hash = line.find('#'); hash != std::string_view::npos) {
      line = line.substr(0, hash);
    }
    std::string type;
    for (size_t i = 0; i < line.size();) {
      const size_t b = line.find_first_not_of(kSpace, i);
      if (b == std::string_view::npos) break;
      const size_t e = std::min(line.size(), line.find_first_of(kSpace, b));
      const std::string_view word = line.substr(b, e - b);
      i = e;
      if (type.empty()) {
        if (!is_media_type(word)) break;
        type = with_charset(text::lowered(word));
      } else if (is_extension(word)) {
        out.by_ext_.emplace(text::lowered(word), type);
      }
    }
  }
  for (const auto& [ext, type] : fallback.by_ext_) out.by_ext_.emplace(ext, type);
  return out;
}

std::string MimeTypes::content_type(std::string_view filename) const {
  const size_t slash = filename.rfind('/');
  const std::string_view base =
      slash == std::string_view::npos ? filename : filename.substr(slash + 1);
  const size_t dot = base.rfind('.');
  if (dot == std::string_view::npos || dot + 1 == base.size()) return std::string(kOctetStream);
  const std::string_view ext = base.substr(dot + 1);
  if (ext.size() > kMaxExtension) return std::string(kOctetStream);
  const auto it = by_ext_.find(text::lowered(ext));
  return it == by_ext_.end() ? std::string(kOctetStream) : it->second;
}

std::string with_charset(std::string_view type) {
  const bool text_like = text::istarts_with(type, "text/") || ends_with(type, "+json") ||
                         ends_with(type, "+xml") || type == "application/json" ||
                         type == "application/xml" || type == "application/javascript";
  return text_like ? std::string(type) + "; charset=utf-8" : std::string(type);
}

std::shared_ptr<const MimeTypes> load_mime_types(const std::string& path, std::string* error) {
  const auto fallback = [&](const std::string& why) {
    if (error != nullptr) *error = why;
    return std::make_shared<const MimeTypes>(MimeTypes::builtin());
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) return fallback("cannot open " + path + ": " + std::strerror(errno));
  std::string text(kMaxFileBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) return fallback("cannot read " + path + ": " + std::strerror(errno));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxFileBytes) return fallback(path + ": larger than 4 MiB");
  return std::make_shared<const MimeTypes>(MimeTypes::parse(text));
}

void install_mime_types(std::shared_ptr<const MimeTypes> table) {
  const std::lock_guard lock(installed_mu);
  installed = std::move(table);
}

std::string mime_type(std::string_view filename) {
  std::shared_ptr<const MimeTypes> table;
  {
    const std::lock_guard lock(installed_mu);
    table = installed;
  }
  return table ? table->content_type(filename) : MimeTypes::builtin().content_type(filename);
}

}  // namespace cdn::http
