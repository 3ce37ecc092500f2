// SPDX-License-Identifier: MIT
// One site of a replica ([content] or a [site NAME] of replicad.ini): its
// host names and its content, either a Store (root, page) or a Pull through
// its own edge cache (origin). The Replica owns one per site and picks it
// by the request's Host (config::SiteMap); nothing is shared between sites,
// so no object of one is ever served for another.
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "common/config/settings.hpp"
#include "daemons/replicad/pull.hpp"
#include "daemons/replicad/store.hpp"

namespace cdn::replica {

// Held by shared_ptr: digest work on the thread pool keeps its site (and
// store) alive across a reload that replaces it.
struct Site : std::enable_shared_from_this<Site> {
  std::string name;                 // "default" for [content]
  std::vector<std::string> hosts;   // empty for the default site
  config::ContentSettings content;  // cache_dir: where this site's cache is
  std::shared_ptr<Store> store;     // root or page; null with an origin
  std::shared_ptr<Pull> pull;       // origin (a reload's renewed Site shares it)
  std::string cache_control;        // of local content, from max_age

  std::string source() const { return store ? store->source() : pull->source(); }
  // Same name, hosts and source: a reload keeps the object (and its cache).
  bool same_source(const config::ContentSettings& c) const;
};

// The Cache-Control of a site's local content, from its max_age.
std::string cache_control_of(const config::ContentSettings& c);

// Opens a site; `store`, when given, is [content]'s store opened already
// (main opens it first, to report a bad root before anything else).
// Throws std::runtime_error when the content or the cache cannot be used.
std::shared_ptr<Site> open_site(uv_loop_t* loop, std::string name, std::vector<std::string> hosts,
                                const config::ContentSettings& content,
                                std::unique_ptr<Store> store, const std::string& server_name);

// [content] (when it names a source) first, then every [site], each with
// its cache directory (config::site_cache_dir).
struct SiteSpec {
  std::string name;
  std::vector<std::string> hosts;
  config::ContentSettings content;
};
std::vector<SiteSpec> site_specs(const config::ReplicaSettings& s);

}  // namespace cdn::replica
