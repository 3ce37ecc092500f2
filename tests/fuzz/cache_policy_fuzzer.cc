// SPDX-License-Identifier: MIT
// The cache policy reads every header an origin or a client sends: it must
// never crash, and its answers must hold together whatever the input. Input:
// "Name: value" lines of a response, an empty line, lines of a request; the
// status comes from the input's own hash (fuzz_common's split_point).
#include <cstdint>
#include <string>
#include <vector>

#include "daemons/replicad/cache.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace {

using cdn::http::Header;
namespace cache = cdn::replica::cache;

constexpr int64_t kNow = 1'700'000'000;

std::vector<Header> lines(std::string_view block) {
  std::vector<Header> out;
  while (!block.empty() && out.size() < 64) {
    const size_t nl = block.find('\n');
    const std::string_view line = block.substr(0, nl);
    block = nl == std::string_view::npos ? std::string_view{} : block.substr(nl + 1);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    out.push_back({std::string(line.substr(0, colon)),
                   std::string(cdn::text::trim_ows(line.substr(colon + 1)))});
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto text = cdn::fuzz::as_view(data, size);
  const size_t blank = text.find("\n\n");
  const auto response = lines(text.substr(0, blank));
  const auto request =
      lines(blank == std::string_view::npos ? std::string_view{} : text.substr(blank + 2));
  const int status = 200 + static_cast<int>(cdn::fuzz::split_point(text) % 400);
  cache::Policy p;
  p.targeted_field = "Acme-Cache-Control";

  const cache::Verdict v = cache::storable("GET", request, status, response, p);
  const auto key = cache::variant_key(response, request);
  if (v == cache::Verdict::Storable) CDN_FUZZ_CHECK(key.has_value());

  cache::Stored s;
  s.status = status;
  s.headers = cache::storable_headers(response, p);
  s.request_time = kNow - 1;
  s.response_time = kNow;
  s.variant = key.value_or("");
  const auto options = cdn::http::connection_options(s.headers);
  for (const auto& h : s.headers) CDN_FUZZ_CHECK(!cdn::http::is_hop_by_hop(h.name, options));

  const int64_t lifetime = cache::freshness_lifetime(s, p);
  CDN_FUZZ_CHECK(lifetime >= 0 && lifetime <= cache::kMaxDelta);
  const int64_t age = cache::current_age(s, kNow + 10);
  CDN_FUZZ_CHECK(age >= 10);
  const cache::Action a = cache::decide(s, p, kNow + 10);
  if (a == cache::Action::Fresh) CDN_FUZZ_CHECK(age < lifetime);
  if (a == cache::Action::StaleRevalidate) CDN_FUZZ_CHECK(cache::may_serve_stale(s, p));
  const cache::Action r = cache::decide(s, p, kNow + 10, request);
  if (r == cache::Action::Stale) CDN_FUZZ_CHECK(cache::may_serve_stale(s, p));
  if (const auto stored_key = cache::variant_key(s.headers, request)) {
    s.variant = *stored_key;
    CDN_FUZZ_CHECK(cache::variant_matches(s, request));
  }
  (void)cache::usable_on_error(s, p, kNow + 10);

  // A 304 that repeats the stored headers changes none of them but Age.
  const auto same = cache::updated_headers(s.headers, s.headers);
  CDN_FUZZ_CHECK(cdn::http::field_lines(same, "Content-Length") ==
                 cdn::http::field_lines(s.headers, "Content-Length"));
  const auto refreshed = cache::refreshed(s, request, kNow, kNow);
  CDN_FUZZ_CHECK(refreshed.variant == s.variant);
  (void)cache::invalidation_targets("POST", 200, "/a/b?c", "h", response);
  (void)cache::served_headers(s, kNow + 10);
  return 0;
}
