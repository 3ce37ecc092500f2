// SPDX-License-Identifier: MIT
// The balancer keeps the scheme: a client that came over TLS is sent to a
// replica's https:// URL, a plain client to its http:// one. Which replicas
// a TLS client may be sent to, and the URLs of each. Pure: the fronts ask
// it once a request, from their table and site masks (sites.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemons/balancerd/table.hpp"

namespace cdn::balancer {

// "http://ADDRESS" (no path): the URL of a replica for plain clients, the
// address the balancer probes.
std::string http_prefix(const Replica& r);
// "https://NAME:TLS_PORT" (":443" left out), NAME being the replica's
// public host or else its address's host; empty when it has no tls_port.
std::string https_prefix(const Replica& r);

// Where a client may be sent, by the scheme it came with:
//  - a plain client: the replicas of `only` (null: every replica), http://;
//  - a TLS client: those of `only` that have a tls_port, https://, even
//    when none of them is up (then 503, as when no replica is up: a client
//    that asked for TLS is never moved off it while HTTPS replicas exist);
//  - a TLS client when none of `only` has a tls_port (the fleet, or the
//    site, serves no HTTPS): `only` and http://, as before replicas had
//    TLS ports (cdn-get refuses to follow such a URL; browsers warn).
// The masks are built once per site mask and table generation.
class SchemeRouter {
 public:
  struct Route {
    const std::vector<char>* only;  // the mask to choose within (null: every replica)
    bool https;
  };
  // `generation`: the table's sites_generation(); the masks `only` points
  // to (the SiteRouter's) live until it moves, and so do the answers.
  Route route(const std::vector<Replica>& replicas, const std::vector<char>* only, bool tls,
              uint64_t generation);

 private:
  struct Tls {
    bool any = false;        // some replica of the site has a tls_port
    std::vector<char> mask;  // which do
  };
  uint64_t generation_ = UINT64_MAX;
  std::unordered_map<const std::vector<char>*, Tls> by_site_;
};

}  // namespace cdn::balancer
