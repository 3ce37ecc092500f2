// SPDX-License-Identifier: MIT
#include "daemons/balancerd/sites.hpp"

#include <algorithm>

#include "common/config/settings.hpp"
#include "common/config/site_map.hpp"

namespace cdn::balancer {

namespace {

// Calls f for every blank-separated word of s.
template <typename F>
void each_word(std::string_view s, F&& f) {
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t b = s.find_first_not_of(' ', pos);
    if (b == std::string_view::npos) break;
    const size_t e = std::min(s.size(), s.find(' ', b));
    f(s.substr(b, e - b));
    pos = e;
  }
}

}  // namespace

void SiteRouter::rebuild(const std::vector<Replica>& replicas, uint64_t generation) {
  generation_ = generation;
  by_host_.clear();
  any_default_ = false;
  defaults_.assign(replicas.size(), 0);
  for (size_t i = 0; i < replicas.size(); ++i) {
    const status::ReplicaStatus& st = replicas[i].last_status;
    bool has_default = st.sites.empty();
    each_word(st.sites, [&](std::string_view site) {
      if (site == config::kDefaultSite) has_default = true;
    });
    defaults_[i] = has_default ? 1 : 0;
    any_default_ = any_default_ || has_default;
    each_word(st.hosts, [&](std::string_view host) {
      const auto key = config::host_key(host);
      if (!key) return;
      auto& h = by_host_[*key];
      h.mask.resize(replicas.size(), 0);
      h.mask[i] = 1;
    });
    each_word(st.host_sites, [&](std::string_view pair) {
      const size_t eq = pair.find('=');
      if (eq == std::string_view::npos || eq + 1 == pair.size()) return;
      const auto key = config::host_key(pair.substr(0, eq));
      if (!key) return;
      const auto it = by_host_.find(*key);
      if (it != by_host_.end() && it->second.site.empty()) it->second.site = pair.substr(eq + 1);
    });
  }
  for (auto& [key, h] : by_host_) {
    if (h.site.empty()) h.site = key;
  }
}

const std::vector<char>* SiteRouter::eligible(std::string_view host_header) const {
  if (by_host_.empty()) return nullptr;
  if (const auto key = config::host_key(host_header)) {
    if (const auto it = by_host_.find(*key); it != by_host_.end()) return &it->second.mask;
  }
  return &defaults_;
}

std::string_view SiteRouter::site_of(std::string_view host_header) const {
  if (by_host_.empty()) return config::kDefaultSite;
  if (const auto key = config::host_key(host_header)) {
    if (const auto it = by_host_.find(*key); it != by_host_.end()) return it->second.site;
  }
  return any_default_ ? config::kDefaultSite : std::string_view();
}

bool SiteRouter::any(const std::vector<char>& mask) {
  return std::any_of(mask.begin(), mask.end(), [](char c) { return c != 0; });
}

}  // namespace cdn::balancer
