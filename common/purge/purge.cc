// SPDX-License-Identifier: MIT
#include "common/purge/purge.hpp"

#include <algorithm>

#include "common/http/path.hpp"
#include "common/text/text.hpp"

namespace cdn::purge {

std::string_view to_string(Scope s) noexcept {
  switch (s) {
    case Scope::Url:
      return "url";
    case Scope::Prefix:
      return "prefix";
    case Scope::Tag:
      return "tag";
  }
  return "url";
}

std::vector<std::string> split_tags(std::string_view value) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < value.size()) {
    while (i < value.size() && (value[i] == ' ' || value[i] == '\t' || value[i] == ',')) ++i;
    size_t j = i;
    while (j < value.size() && value[j] != ' ' && value[j] != '\t' && value[j] != ',') ++j;
    if (j > i) {
      std::string tag(value.substr(i, j - i));
      if (std::find(out.begin(), out.end(), tag) == out.end()) out.push_back(std::move(tag));
    }
    i = j;
  }
  return out;
}

std::optional<Request> parse(std::string_view target, const Fields& f, std::string& error) {
  Request r;
  if (f.host) r.site = std::string(*f.host);
  if (f.id) r.id = std::string(text::trim_ows(*f.id));
  if (f.soft) {
    const auto v = text::trim_ows(*f.soft);
    if (v == "1") {
      r.soft = true;
    } else if (v != "0") {
      error = "CDN-Purge-Soft must be 0 or 1";
      return std::nullopt;
    }
  }
  if (f.tag) {
    r.scope = Scope::Tag;
    r.tags = split_tags(*f.tag);
    if (r.tags.empty()) {
      error = "CDN-Purge-Tag names no tag";
      return std::nullopt;
    }
    if (r.tags.size() > kMaxTags) {
      error = "CDN-Purge-Tag: more than 256 tags";
      return std::nullopt;
    }
    for (const auto& t : r.tags) {
      if (t.size() > kMaxTagBytes) {
        error = "CDN-Purge-Tag: a tag longer than 256 bytes";
        return std::nullopt;
      }
    }
    return r;
  }
  const auto query = http::query_of(target);
  std::string_view path_part = target.substr(0, target.find('?'));
  // A '*' ends a prefix; anywhere else it is part of a path like any other
  // byte (normalize_path keeps it).
  if (path_part.ends_with('*')) {
    if (!query.empty()) {
      error = "a prefix purge takes no query";
      return std::nullopt;
    }
    r.scope = Scope::Prefix;
    path_part.remove_suffix(1);
    if (path_part.empty()) path_part = "/";
  }
  auto path = http::normalize_path(path_part);
  if (!path) {
    error = "the purge target is not a path";
    return std::nullopt;
  }
  // normalize_path drops a trailing slash of nothing but keeps "/img/": a
  // prefix "/img/" must not match "/imgs".
  if (r.scope == Scope::Prefix && path_part.ends_with('/') && !path->ends_with('/')) {
    path->push_back('/');
  }
  r.target = std::move(*path);
  if (r.scope == Scope::Url && !query.empty()) r.target.append("?").append(query);
  return r;
}

std::string wire_target(const Request& r) {
  switch (r.scope) {
    case Scope::Tag:
      return "/";
    case Scope::Prefix:
      return http::encode_path(r.target) + "*";
    case Scope::Url:
      break;
  }
  const auto q = r.target.find('?');
  std::string t = http::encode_path(std::string_view(r.target).substr(0, q));
  // The query as it came (a request-target the parser accepted), so that
  // it is the replica's cache key byte for byte.
  if (q != std::string::npos) t.append(r.target, q);
  return t;
}

std::string wire_headers(const Request& r) {
  std::string h;
  if (r.scope == Scope::Tag) {
    h.append(kTagHeader).append(": ");
    for (size_t i = 0; i < r.tags.size(); ++i) {
      if (i) h.push_back(' ');
      h.append(r.tags[i]);
    }
    h.append("\r\n");
  }
  if (r.soft) h.append(kSoftHeader).append(": 1\r\n");
  if (!r.id.empty()) h.append(kIdHeader).append(": ").append(r.id).append("\r\n");
  return h;
}

std::string describe(const Request& r) {
  std::string s(to_string(r.scope));
  if (r.scope == Scope::Tag) {
    for (const auto& t : r.tags) s.append(" ").append(t);
  } else {
    s.append(" ").append(r.target);
  }
  if (r.soft) s.append(" (soft)");
  return s;
}

}  // namespace cdn::purge
