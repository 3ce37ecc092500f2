// SPDX-License-Identifier: MIT
#include "daemons/replicad/site.hpp"

#include <chrono>

#include "daemons/replicad/replica.hpp"

namespace cdn::replica {

std::string cache_control_of(const config::ContentSettings& c) {
  return "public, max-age=" +
         std::to_string(std::chrono::duration_cast<std::chrono::seconds>(c.max_age).count());
}

bool Site::same_source(const config::ContentSettings& c) const {
  return c.root == content.root && c.page == content.page && c.origin == content.origin &&
         c.index == content.index && c.cache_dir == content.cache_dir;
}

std::shared_ptr<Site> open_site(uv_loop_t* loop, std::string name, std::vector<std::string> hosts,
                                const config::ContentSettings& content,
                                std::unique_ptr<Store> store, const std::string& server_name) {
  auto site = std::make_shared<Site>();
  site->name = std::move(name);
  site->hosts = std::move(hosts);
  site->content = content;
  site->cache_control = cache_control_of(content);
  if (!store) store = open_store(content);
  site->store = std::move(store);
  if (!site->store) {
    site->pull = std::make_shared<Pull>(loop, content, server_name);
  }
  return site;
}

std::vector<SiteSpec> site_specs(const config::ReplicaSettings& s) {
  std::vector<SiteSpec> out;
  if (config::has_default_site(s))
    out.push_back({std::string(config::kDefaultSite), {}, s.content});
  for (const auto& site : s.sites) {
    SiteSpec spec{site.name, site.hosts, site.content};
    spec.content.cache_dir = config::site_cache_dir(site);
    out.push_back(std::move(spec));
  }
  return out;
}

}  // namespace cdn::replica
