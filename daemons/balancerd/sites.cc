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
  defaults_.assign(replicas.size(), 0);
  for (size_t i = 0; i < replicas.size(); ++i) {
    const status::ReplicaStatus& st = replicas[i].last_status;
    bool has_default = st.sites.empty();
    each_word(st.sites, [&](std::string_view site) {
      if (site == config::kDefaultSite) has_default = true;
    });
    defaults_[i] = has_default ? 1 : 0;
    each_word(st.hosts, [&](std::string_view host) {
      const auto key = config::host_key(host);
      if (!key) return;
      auto& mask = by_host_[*key];
      mask.resize(replicas.size(), 0);
      mask[i] = 1;
    });
  }
}

const std::vector<char>* SiteRouter::eligible(std::string_view host_header) const {
  if (by_host_.empty()) return nullptr;
  if (const auto key = config::host_key(host_header)) {
    if (const auto it = by_host_.find(*key); it != by_host_.end()) return &it->second;
  }
  return &defaults_;
}

bool SiteRouter::any(const std::vector<char>& mask) {
  return std::any_of(mask.begin(), mask.end(), [](char c) { return c != 0; });
}

}  // namespace cdn::balancer
