// SPDX-License-Identifier: MIT
// The edge cache's pure policy: Cache-Control parsing, storability,
// freshness lifetime and age (RFC 9111), stale-while-revalidate and
// stale-if-error (RFC 5861), and 304 refreshes.
#include <gtest/gtest.h>

#include "common/http/serialize.hpp"
#include "daemons/replicad/cache.hpp"

namespace cdn::replica::cache {
namespace {

constexpr int64_t kT0 = 1'700'000'000;

Stored stored(std::string cc, int64_t date = kT0) {
  Stored s;
  s.cache_control = std::move(cc);
  s.date = date;
  s.request_time = kT0;
  s.response_time = kT0;
  return s;
}

Policy policy(int64_t ttl = 60, int64_t swr = 10, int64_t sie = 300) {
  return Policy{ttl, swr, sie};
}

TEST(CacheControl, ParsesDirectives) {
  const Directives d = parse_cache_control(
      "public, Max-Age=60, s-maxage=\"30\", stale-while-revalidate=5, stale-if-error=600, "
      "must-revalidate");
  EXPECT_TRUE(d.public_);
  EXPECT_EQ(d.max_age, 60);
  EXPECT_EQ(d.s_maxage, 30);
  EXPECT_EQ(d.stale_while_revalidate, 5);
  EXPECT_EQ(d.stale_if_error, 600);
  EXPECT_TRUE(d.must_revalidate);
  EXPECT_FALSE(d.no_store);
  EXPECT_FALSE(d.no_cache);
}

TEST(CacheControl, FlagsAndOddInput) {
  EXPECT_TRUE(parse_cache_control("no-store").no_store);
  EXPECT_TRUE(parse_cache_control("NO-CACHE").no_cache);
  EXPECT_TRUE(parse_cache_control("private=\"Set-Cookie, X\"").private_);
  EXPECT_TRUE(parse_cache_control("proxy-revalidate").must_revalidate);
  EXPECT_FALSE(parse_cache_control("x-thing=\"a,no-store\"").no_store);  // inside quotes
  EXPECT_EQ(parse_cache_control("max-age=99999999999999999999").max_age, 2147483648LL);
  const Directives bad = parse_cache_control("max-age=soon");
  EXPECT_FALSE(bad.max_age);
  EXPECT_TRUE(bad.malformed_max_age);
  EXPECT_FALSE(parse_cache_control("").max_age);
  EXPECT_FALSE(parse_cache_control(",,, ,").no_store);
}

TEST(Storable, StatusAndDirectives) {
  EXPECT_TRUE(storable(stored("max-age=10")));
  EXPECT_TRUE(storable(stored("")));
  EXPECT_FALSE(storable(stored("no-store")));
  EXPECT_FALSE(storable(stored("private, max-age=10")));
  Stored s = stored("max-age=10");
  s.status = 404;
  EXPECT_FALSE(storable(s));
}

TEST(Freshness, LifetimeSources) {
  const Policy p = policy(42);
  EXPECT_EQ(freshness_lifetime(stored("max-age=10, s-maxage=20"), p), 20);
  EXPECT_EQ(freshness_lifetime(stored("max-age=10"), p), 10);
  Stored e = stored("");
  e.expires = kT0 + 300;
  EXPECT_EQ(freshness_lifetime(e, p), 300);
  e.expires = -2;  // invalid Expires: already expired
  EXPECT_EQ(freshness_lifetime(e, p), 0);
  e.expires = kT0 + 300;
  e.cache_control = "max-age=5";  // max-age wins over Expires
  EXPECT_EQ(freshness_lifetime(e, p), 5);
  EXPECT_EQ(freshness_lifetime(stored(""), p), 42);  // the configured default
  EXPECT_EQ(freshness_lifetime(stored("max-age=x"), p), 0);
}

TEST(Freshness, AgeCountsHeaderDelayAndResidence) {
  Stored s = stored("max-age=100", kT0 - 5);  // origin clock 5 s behind arrival
  s.request_time = kT0 - 2;
  s.age = 3;
  // apparent 5; corrected age value 3 + 2 delay = 5; plus 10 resident.
  EXPECT_EQ(current_age(s, kT0 + 10), 15);
  Stored no_date = stored("max-age=100", -1);
  EXPECT_EQ(current_age(no_date, kT0 + 7), 7);
}

TEST(Decide, FreshThenStaleWhileRevalidateThenRevalidate) {
  const Policy p = policy(60, 10, 300);
  const Stored s = stored("max-age=30");
  EXPECT_EQ(decide(s, p, kT0), Action::Fresh);
  EXPECT_EQ(decide(s, p, kT0 + 29), Action::Fresh);
  EXPECT_EQ(decide(s, p, kT0 + 30), Action::StaleRevalidate);
  EXPECT_EQ(decide(s, p, kT0 + 39), Action::StaleRevalidate);
  EXPECT_EQ(decide(s, p, kT0 + 40), Action::Revalidate);
}

TEST(Decide, OriginDirectivesOverrideThePolicy) {
  const Policy p = policy(60, 10, 300);
  EXPECT_EQ(decide(stored("max-age=30, stale-while-revalidate=100"), p, kT0 + 120),
            Action::StaleRevalidate);
  EXPECT_EQ(decide(stored("max-age=30, stale-while-revalidate=0"), p, kT0 + 31),
            Action::Revalidate);
  EXPECT_EQ(decide(stored("max-age=30, must-revalidate"), p, kT0 + 31), Action::Revalidate);
  EXPECT_EQ(decide(stored("s-maxage=30"), p, kT0 + 31), Action::Revalidate);
  EXPECT_EQ(decide(stored("no-cache, max-age=3600"), p, kT0), Action::Revalidate);
  EXPECT_EQ(decide(stored("max-age=0"), policy(60, 0, 0), kT0), Action::Revalidate);
}

TEST(StaleIfError, WindowAndRefusals) {
  const Policy p = policy(60, 10, 300);
  const Stored s = stored("max-age=30");
  EXPECT_TRUE(usable_on_error(s, p, kT0 + 10));    // fresh
  EXPECT_TRUE(usable_on_error(s, p, kT0 + 329));   // within 30 + 300
  EXPECT_FALSE(usable_on_error(s, p, kT0 + 330));  // past it
  EXPECT_TRUE(usable_on_error(stored("max-age=30, stale-if-error=1000"), p, kT0 + 1000));
  EXPECT_FALSE(usable_on_error(stored("max-age=30, stale-if-error=0"), p, kT0 + 31));
  EXPECT_FALSE(usable_on_error(stored("max-age=30, must-revalidate"), p, kT0 + 31));
  EXPECT_FALSE(usable_on_error(stored("no-cache"), p, kT0 + 1));
}

TEST(Refresh, NotModifiedRenewsFreshness) {
  const Policy p = policy(60, 0, 0);
  Stored old = stored("max-age=30");
  EXPECT_EQ(decide(old, p, kT0 + 100), Action::Revalidate);
  Stored r304 = stored("max-age=50", kT0 + 100);
  r304.request_time = kT0 + 100;
  r304.response_time = kT0 + 100;
  const Stored s = refreshed(old, r304, true, false);
  EXPECT_EQ(s.cache_control, "max-age=50");
  EXPECT_EQ(decide(s, p, kT0 + 140), Action::Fresh);
  EXPECT_EQ(decide(s, p, kT0 + 150), Action::Revalidate);
  // A 304 without Cache-Control keeps the stored directives.
  const Stored kept = refreshed(old, r304, false, false);
  EXPECT_EQ(kept.cache_control, "max-age=30");
  EXPECT_EQ(decide(kept, p, kT0 + 129), Action::Fresh);
}

TEST(Expires, AbsentInvalidValid) {
  EXPECT_EQ(parse_expires(std::nullopt), -1);
  EXPECT_EQ(parse_expires("0"), -2);
  EXPECT_EQ(parse_expires(" " + http::http_date(kT0) + " "), kT0);
}

}  // namespace
}  // namespace cdn::replica::cache
