// SPDX-License-Identifier: MIT
// A purge request, as one replica or the balancer receives it and as the
// balancer forwards it. Pure: parsed from the request's target and header
// values, written back as a target and header lines.
//
// Wire form (the method is PURGE, as in Varnish, Squid and ATS):
//   PURGE /a/b.css              one URL: the path and every query variant of it
//   PURGE /a/b.css?v=2          one URL with exactly that query
//   PURGE /img/*                every URL whose path starts with "/img/"
//   PURGE /  + CDN-Purge-Tag: t1 t2, t3
//                               every object the origin tagged t1, t2 or t3
//                               (Surrogate-Key / Cache-Tag); the target is
//                               not used then
//   CDN-Purge-Soft: 1           mark stale instead of removing
//   CDN-Purge-Id: TEXT          the balancer's id for the purge (logs)
//   Authorization: Bearer TOKEN [admin] token_file's token
// The Host header is kept in `site`: once a replica serves several sites it
// selects which one is purged (the default site until then).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cdn::purge {

enum class Scope { Url, Prefix, Tag };
std::string_view to_string(Scope s) noexcept;

inline constexpr std::string_view kTagHeader = "CDN-Purge-Tag";
inline constexpr std::string_view kSoftHeader = "CDN-Purge-Soft";
inline constexpr std::string_view kIdHeader = "CDN-Purge-Id";
// At most this many tags in one purge, and bytes in one tag: a client
// controls both.
inline constexpr size_t kMaxTags = 256;
inline constexpr size_t kMaxTagBytes = 256;

struct Request {
  Scope scope = Scope::Url;
  // Url: the normalised path, plus "?query" when one was given. Prefix: the
  // normalised path prefix (may end in '/'). Tag: empty.
  std::string target = {};
  std::vector<std::string> tags = {};  // Tag: distinct, in the order given
  bool soft = false;
  std::string site = {};  // the Host header ("" when none); see above
  std::string id = {};    // CDN-Purge-Id, "" when none
  bool operator==(const Request&) const = default;
};

// The header values a purge reads; absent ones are nullopt.
struct Fields {
  std::optional<std::string_view> tag = std::nullopt;
  std::optional<std::string_view> soft = std::nullopt;
  std::optional<std::string_view> id = std::nullopt;
  std::optional<std::string_view> host = std::nullopt;
};

// From a PURGE request. nullopt with `error` set (a 400's body) when the
// target is not a path, a tag is empty or too long, or soft is not 0/1.
std::optional<Request> parse(std::string_view target, const Fields& f, std::string& error);

// "a b,c ,, d" -> {"a","b","c","d"}: blanks and/or commas separate tags
// (Surrogate-Key uses blanks, Cache-Tag commas); duplicates dropped.
std::vector<std::string> split_tags(std::string_view value);

// The request-target to forward (the path %-encoded, "*" after a prefix).
std::string wire_target(const Request& r);
// Header lines to forward ("Name: value\r\n" each), without Authorization.
std::string wire_headers(const Request& r);
// A short human form for logs and JSON: "url /a", "prefix /img/", "tag a b".
std::string describe(const Request& r);

}  // namespace cdn::purge
