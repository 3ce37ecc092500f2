// SPDX-License-Identifier: MIT
// The purge index alone (common/purge/index.hpp): N keys, each tagged "all"
// and one of 100 groups, then one purge timed: by tag (hard), by tag
// (soft), by prefix, and the N URL purges one by one. Prints ms per purge.
//   cdn-bench-purge-index [N]   (default 100000)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/purge/index.hpp"

namespace {

using cdn::purge::Index;
using cdn::purge::Request;
using cdn::purge::Scope;

void fill(Index& ix, int n) {
  for (int i = 0; i < n; ++i) {
    ix.put("/obj/" + std::to_string(i % 100) + "/" + std::to_string(i),
           {"all", "g" + std::to_string(i % 100)});
  }
}

template <typename Fn>
double ms(Fn fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 100000;
  Index ix;
  const double fill_ms = ms([&] { fill(ix, n); });
  std::printf("fill %d objects (2 tags each)       %8.1f ms\n", n, fill_ms);

  Request soft{.scope = Scope::Tag, .tags = {"all"}, .soft = true};
  size_t named = 0;
  double t = ms([&] { named = ix.apply(soft, 0).size(); });
  std::printf("soft tag purge, %zu objects       %8.1f ms\n", named, t);

  Request hard{.scope = Scope::Tag, .tags = {"all"}};
  t = ms([&] { named = ix.apply(hard, 1).size(); });
  std::printf("hard tag purge, %zu objects       %8.1f ms  (index left: %zu keys, %zu tags)\n",
              named, t, ix.size(), ix.tag_count());

  fill(ix, n);
  Request prefix{.scope = Scope::Prefix, .target = "/obj/"};
  t = ms([&] { named = ix.apply(prefix, 2).size(); });
  std::printf("hard prefix purge, %zu objects    %8.1f ms\n", named, t);

  fill(ix, n);
  Request group{.scope = Scope::Tag, .tags = {"g7"}};
  t = ms([&] { named = ix.apply(group, 3).size(); });
  std::printf("hard tag purge of one group, %zu  %8.1f ms\n", named, t);

  Request one{.scope = Scope::Url};
  int64_t now = 4;
  t = ms([&] {
    for (int i = 0; i < n; ++i) {
      one.target = "/obj/" + std::to_string(i % 100) + "/" + std::to_string(i);
      ix.apply(one, now++);
    }
  });
  std::printf("URL purges one by one, %d        %8.1f ms  (%.2f us each)\n", n, t,
              t * 1000 / n);
  return 0;
}
