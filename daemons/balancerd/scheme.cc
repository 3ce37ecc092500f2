// SPDX-License-Identifier: MIT
#include "daemons/balancerd/scheme.hpp"

namespace cdn::balancer {

std::string http_prefix(const Replica& r) { return "http://" + r.address.str(); }

std::string https_prefix(const Replica& r) {
  if (r.tls_port == 0) return {};
  std::string out = "https://";
  if (!r.public_host.empty()) {
    out += r.public_host;
  } else if (r.address.host.find(':') != std::string::npos) {
    out += "[" + r.address.host + "]";
  } else {
    out += r.address.host;
  }
  if (r.tls_port != 443) out += ":" + std::to_string(r.tls_port);
  return out;
}

SchemeRouter::Route SchemeRouter::route(const std::vector<Replica>& replicas,
                                        const std::vector<char>* only, bool tls,
                                        uint64_t generation) {
  if (!tls) return {only, false};
  if (generation != generation_) {
    by_site_.clear();
    generation_ = generation;
  }
  auto [it, fresh] = by_site_.try_emplace(only);
  Tls& t = it->second;
  if (fresh) {
    t.mask.assign(replicas.size(), 0);
    for (size_t i = 0; i < replicas.size(); ++i) {
      const bool in_site = only == nullptr || (i < only->size() && (*only)[i] != 0);
      if (in_site && replicas[i].tls_port != 0) {
        t.mask[i] = 1;
        t.any = true;
      }
    }
  }
  if (!t.any) return {only, false};
  return {&t.mask, true};
}

}  // namespace cdn::balancer
