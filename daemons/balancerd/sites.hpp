// SPDX-License-Identifier: MIT
// Which replicas serve a request's Host, from what each replica's status
// says it serves (status::ReplicaStatus sites and hosts). A replica serves
// the hosts it lists; a host no replica lists goes to the replicas with a
// default site ("default" among their sites, or no sites at all: a replica
// from before sites). Pure: the balancer rebuilds it when the table's
// sites_generation() moves, and asks it once a request.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "daemons/balancerd/table.hpp"

namespace cdn::balancer {

class SiteRouter {
 public:
  void rebuild(const std::vector<Replica>& replicas, uint64_t generation);
  uint64_t generation() const { return generation_; }

  // nullptr: every replica may take the host (no replica lists any host,
  // the fleet of a single site); otherwise a mask over the replicas
  // (replicas()[i] serves it when (*mask)[i]), possibly all zero.
  const std::vector<char>* eligible(std::string_view host_header) const;
  // Whether any replica, up or not, serves the host (else: 421).
  static bool any(const std::vector<char>& mask);
  // The site a request for the host is counted under (metrics): the name
  // its replicas give it (status host_sites; the first replica's when they
  // differ, the host itself from a replica that names none), "default" for
  // the hosts that go to default sites, "" when no replica takes the host.
  std::string_view site_of(std::string_view host_header) const;

 private:
  struct Host {
    std::vector<char> mask;
    std::string site;
  };
  std::unordered_map<std::string, Host> by_host_;
  std::vector<char> defaults_;
  bool any_default_ = false;
  uint64_t generation_ = UINT64_MAX;
};

}  // namespace cdn::balancer
