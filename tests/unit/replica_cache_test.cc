// SPDX-License-Identifier: MIT
// The edge cache's pure policy as a shared cache: Cache-Control and targeted
// fields (RFC 9111 §5.2, RFC 9213), Age / Expires / Date, storability (§3),
// freshness and age (§4.2), request directives (§5.2.1), stale-while-
// revalidate / stale-if-error (RFC 5861), Vary (§4.1), 304 updates (§4.3.4)
// and invalidation (§4.4). Times come from a fake clock: plain numbers.
#include <gtest/gtest.h>

#include "common/http/serialize.hpp"
#include "daemons/replicad/cache.hpp"

namespace cdn::replica::cache {
namespace {

using H = std::vector<http::Header>;

constexpr int64_t kT0 = 1'700'000'000;  // 2023-11-14

std::string date(int64_t t) { return http::http_date(t); }

// A response received at kT0 (request sent then too), stored as Pull does.
Stored stored(H headers, int status = 200, const Policy& p = {}) {
  Stored s;
  s.status = status;
  s.headers = storable_headers(headers, p);
  s.request_time = kT0;
  s.response_time = kT0;
  s.variant = "";
  return s;
}

Stored cc(std::string value, int status = 200) {
  return stored({{"Date", date(kT0)}, {"Cache-Control", std::move(value)}}, status);
}

Policy overrides(std::optional<int64_t> ttl, std::optional<int64_t> swr,
                 std::optional<int64_t> sie) {
  Policy p;
  p.default_ttl = ttl;
  p.stale_while_revalidate = swr;
  p.stale_if_error = sie;
  return p;
}

Verdict store_get(const H& response, int status = 200, const H& request = {},
                  const Policy& p = {}) {
  return storable("GET", request, status, response, p);
}

// ------------------------------------------------------------ §5.2 parsing

TEST(CacheControl, ParsesResponseDirectives_5_2_2) {
  const Directives d = parse_cache_control(
      "public, Max-Age=60, s-maxage=\"30\", stale-while-revalidate=5, stale-if-error=600, "
      "must-revalidate, proxy-revalidate, immutable, must-understand");
  EXPECT_TRUE(d.public_);
  EXPECT_EQ(d.max_age, 60);
  EXPECT_EQ(d.s_maxage, 30);  // quoted form accepted (§5.2)
  EXPECT_EQ(d.stale_while_revalidate, 5);
  EXPECT_EQ(d.stale_if_error, 600);
  EXPECT_TRUE(d.must_revalidate);
  EXPECT_TRUE(d.proxy_revalidate);
  EXPECT_TRUE(d.immutable);
  EXPECT_TRUE(d.must_understand);
  EXPECT_FALSE(d.no_store);
  EXPECT_FALSE(d.no_cache);
  EXPECT_FALSE(d.private_);
}

TEST(CacheControl, ParsesRequestDirectives_5_2_1) {
  const Directives d =
      parse_cache_control("max-age=5, min-fresh=7, max-stale, no-cache, no-store, only-if-cached");
  EXPECT_EQ(d.max_age, 5);
  EXPECT_EQ(d.min_fresh, 7);
  EXPECT_EQ(d.max_stale, kMaxDelta);  // bare max-stale: any staleness
  EXPECT_TRUE(d.no_cache);
  EXPECT_TRUE(d.no_store);
  EXPECT_TRUE(d.only_if_cached);
  EXPECT_EQ(parse_cache_control("max-stale=9").max_stale, 9);
  EXPECT_FALSE(parse_cache_control("max-stale=x").max_stale);  // no extra staleness
  EXPECT_FALSE(parse_cache_control("min-fresh=x").min_fresh);
}

TEST(CacheControl, SeveralLinesAreOneList_RFC9110_5_3) {
  const H h = {{"Cache-Control", "max-age=60"}, {"X", "y"}, {"cache-control", "no-cache"}};
  const Directives d = parse_cache_control(h);
  EXPECT_EQ(d.max_age, 60);
  EXPECT_TRUE(d.no_cache);
}

TEST(CacheControl, InvalidMaxAgeIsStale_4_2_1) {
  for (const char* v : {"max-age=3600.0", "max-age=3600.5", "max-age='3600'", "max-age=a3600",
                        "max-age=3600a", "max-age=", "max-age", "max-age=\"36", "max-age=-1"}) {
    EXPECT_EQ(parse_cache_control(v).max_age, 0) << v;
  }
  EXPECT_EQ(parse_cache_control("max-age=003600").max_age, 3600);
  EXPECT_EQ(parse_cache_control("max-age=99999999999999999999").max_age, kMaxDelta);  // §1.2.2
  EXPECT_EQ(parse_cache_control("max-age=2147483649").max_age, kMaxDelta);
}

TEST(CacheControl, SpaceAroundEqualsIsNotMaxAge_5_2) {
  // "max-age =1" has no token name: not a directive; "max-age= 1" a bad value.
  EXPECT_FALSE(parse_cache_control("max-age =3600").max_age);
  EXPECT_EQ(parse_cache_control("max-age= 3600").max_age, 0);
}

TEST(CacheControl, DuplicatesKeepTheSmaller_4_2_1) {
  EXPECT_EQ(parse_cache_control("max-age=3600, max-age=1").max_age, 1);
  EXPECT_EQ(parse_cache_control("max-age=1, max-age=3600").max_age, 1);
  const H lines = {{"Cache-Control", "max-age=3600"}, {"Cache-Control", "max-age=1"}};
  EXPECT_EQ(parse_cache_control(lines).max_age, 1);
  EXPECT_EQ(parse_cache_control("s-maxage=5, s-maxage=x").s_maxage, 0);
}

TEST(CacheControl, QuotedStringsHideCommasAndDirectives_RFC9110_5_6_4) {
  EXPECT_EQ(parse_cache_control("extension=\"max-age=3600\", max-age=1").max_age, 1);
  EXPECT_EQ(parse_cache_control("max-age=1, extension=\"max-age=3600\"").max_age, 1);
  EXPECT_FALSE(parse_cache_control("x-thing=\"a,no-store\"").no_store);
  EXPECT_FALSE(parse_cache_control("x=\"a\\\",no-store\"").no_store);  // escaped quote
  EXPECT_TRUE(parse_cache_control("NO-STORE").no_store);
  EXPECT_TRUE(parse_cache_control("nO-StOrE").no_store);
  EXPECT_FALSE(parse_cache_control(",,, ,").no_store);
  EXPECT_FALSE(parse_cache_control("").max_age);
}

TEST(CacheControl, FieldNameArguments_5_2_2_4_and_5_2_2_7) {
  const Directives d = parse_cache_control("no-cache=\"a, B\", private=x");
  EXPECT_FALSE(d.no_cache);
  EXPECT_EQ(d.no_cache_fields, (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(d.private_);
  EXPECT_EQ(d.private_fields, (std::vector<std::string>{"x"}));
  // A list we cannot read means the whole response.
  EXPECT_TRUE(parse_cache_control("no-cache=\"a b\"").no_cache);
  EXPECT_TRUE(parse_cache_control("private=\"\"").private_);
  EXPECT_TRUE(parse_cache_control("private=\"unterminated").private_);
  EXPECT_TRUE(parse_cache_control("no-cache=\"x\", no-cache").no_cache);
}

// ------------------------------------------------------------ RFC 9213

TEST(Targeted, CdnCacheControlIsAStructuredDictionary_RFC9213_2) {
  const H h = {{"CDN-Cache-Control", "max-age=60, must-revalidate"}};
  const auto d = parse_targeted(h, "CDN-Cache-Control");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->max_age, 60);
  EXPECT_TRUE(d->must_revalidate);
  EXPECT_FALSE(parse_targeted(h, "Acme-Cache-Control"));  // absent
  EXPECT_EQ(
      parse_targeted(H{{"CDN-Cache-Control", "max-age=99999999999"}}, "cdn-cache-control")->max_age,
      kMaxDelta);
}

TEST(Targeted, InvalidFieldIsIgnoredWhole_RFC9213_2_1) {
  for (const char* v : {"max-age=10000, &&&&&", "max-age=\"10000\"", "max-age=1.5", "max-age=-1",
                        "MaX-aGe=10", "max-age =1", "no-store=1", "", "  "}) {
    EXPECT_FALSE(parse_targeted(H{{"CDN-Cache-Control", v}}, "CDN-Cache-Control")) << v;
  }
  // Extension members of any type are fine.
  EXPECT_TRUE(parse_targeted(H{{"CDN-Cache-Control", "max-age=1, ext=\"x\", e2=(a b)"}},
                             "CDN-Cache-Control"));
}

TEST(Targeted, OperatorFieldThenCdnCacheControlThenCacheControl_RFC9213_2_1) {
  Policy p;
  p.targeted_field = "Acme-Cache-Control";
  const H all = {{"Cache-Control", "max-age=1"},
                 {"CDN-Cache-Control", "max-age=2"},
                 {"Acme-Cache-Control", "max-age=3"}};
  Governing g = governing(all, p);
  EXPECT_TRUE(g.targeted);
  EXPECT_EQ(g.d.max_age, 3);
  g = governing(all, Policy{});
  EXPECT_EQ(g.d.max_age, 2);
  const H invalid_acme = {{"Cache-Control", "max-age=1"},
                          {"CDN-Cache-Control", "max-age=2"},
                          {"Acme-Cache-Control", "max-age=x"}};
  EXPECT_EQ(governing(invalid_acme, p).d.max_age, 2);
  g = governing(H{{"Cache-Control", "max-age=1"}}, p);
  EXPECT_FALSE(g.targeted);
  EXPECT_EQ(g.d.max_age, 1);
}

TEST(Targeted, GovernsFreshnessAndStorage_RFC9213_2_1) {
  const Policy p;
  // Cache-Control and Expires are ignored when a targeted field governs.
  EXPECT_EQ(store_get({{"CDN-Cache-Control", "max-age=60"}, {"Cache-Control", "no-store"}}),
            Verdict::Storable);
  EXPECT_EQ(store_get({{"CDN-Cache-Control", "no-store"}, {"Cache-Control", "max-age=60"}}),
            Verdict::NoStore);
  EXPECT_EQ(store_get({{"CDN-Cache-Control", "max-age=\"1\""}, {"Cache-Control", "no-store"}}),
            Verdict::NoStore);
  const Stored past_expires = stored(
      {{"Date", date(kT0)}, {"Expires", date(kT0 - 10)}, {"CDN-Cache-Control", "max-age=100"}});
  EXPECT_EQ(freshness_lifetime(past_expires, p), 100);
  const Stored short_cdn = stored({{"Date", date(kT0)},
                                   {"Cache-Control", "max-age=3600"},
                                   {"CDN-Cache-Control", "max-age=0"},
                                   {"Expires", date(kT0 + 3600)}});
  EXPECT_EQ(freshness_lifetime(short_cdn, p), 0);
  EXPECT_EQ(decide(short_cdn, p, kT0), Action::Revalidate);
  const Stored cdn_no_cache =
      stored({{"Cache-Control", "max-age=3600"}, {"CDN-Cache-Control", "no-cache"}});
  EXPECT_EQ(decide(cdn_no_cache, p, kT0), Action::Revalidate);
  EXPECT_EQ(store_get({{"CDN-Cache-Control", "private"}, {"Cache-Control", "max-age=60"}}),
            Verdict::Private);
}

// ------------------------------------------------------------ Age, Expires, Date

TEST(Age, StrictNonNegativeInteger_5_1) {
  EXPECT_EQ(parse_age(H{{"Age", "30"}}), 30);
  EXPECT_EQ(parse_age(H{{"Age", "0"}}), 0);
  for (const char* v : {"7200.0", "-7200", "old", "1;x=y", "", "\"5\"", "0x10"}) {
    EXPECT_FALSE(parse_age(H{{"Age", v}})) << v;
  }
  EXPECT_FALSE(parse_age(H{}));
  EXPECT_EQ(parse_age(H{{"Age", "2147483647"}}), 2147483647);
  EXPECT_EQ(parse_age(H{{"Age", "99999999999999"}}), kMaxDelta);
}

TEST(Age, FirstMemberOfTheFirstLine_5_1) {
  EXPECT_EQ(parse_age(H{{"Age", "7200, 0"}}), 7200);
  EXPECT_EQ(parse_age(H{{"Age", "0, 7200"}}), 0);
  EXPECT_EQ(parse_age(H{{"Age", "7200"}, {"Age", "0"}}), 7200);
  EXPECT_EQ(parse_age(H{{"Age", "0"}, {"Age", "7200"}}), 0);
}

TEST(Expires, ThreeDateFormsAndInvalidMeansExpired_5_3) {
  const int64_t now = kT0;
  EXPECT_FALSE(parse_expires(H{}, now));
  EXPECT_EQ(parse_expires(H{{"Expires", date(kT0)}}, now), kT0);
  EXPECT_EQ(parse_expires(H{{"Expires", "Tue, 19 Jan 2038 14:14:08 GMT"}}, now), 2147523248LL);
  EXPECT_EQ(parse_expires(H{{"Expires", "Sun, 21 Nov 2286 04:46:39 GMT"}}, now), 10000039599LL);
  const int64_t aug18_2050 = 2544400878;  // Thu, 18 Aug 2050 02:01:18 GMT
  EXPECT_EQ(parse_expires(H{{"Expires", "Thursday, 18-Aug-50 02:01:18 GMT"}}, now), aug18_2050);
  EXPECT_EQ(parse_expires(H{{"Expires", "Mon Aug  8 02:01:18 2050"}}, now),
            aug18_2050 - 10 * 86400);
  EXPECT_EQ(parse_expires(H{{"Expires", "THU, 18 AUG 2050 02:01:18 gMT"}}, now), aug18_2050);
  for (const char* v :
       {"Thu, 18 Aug 2050 02:01:18 UTC", "Thu, 18 Aug 2050 02:01:18 AEST",
        "Thu, 18 Aug 50 02:01:18 GMT", "Thu 18 Aug 2050 02:01:18 GMT",
        "Thu, 18  Aug  2050 02:01:18 GMT", "Thu, 18-Aug-2050 02:01:18 GMT",
        "Thu, 18 Aug 2050 02.01.18 GMT", "Thu, 18 Aug 2050 2:01:18 GMT", "0", "",
        "Fri, 18 Aug 2050 02:01:18 GMT", "Thu Aug  8 02:01:18 2050" /* wrong weekdays */}) {
    EXPECT_EQ(parse_expires(H{{"Expires", v}}, now), kExpired) << v;
  }
  // Two lines that disagree: stale (§4.2.1 allows first or stale).
  EXPECT_EQ(parse_expires(H{{"Expires", "Thu, 18 Aug 2050 02:01:18 GMT"},
                            {"Expires", "Thu, 18 Aug 2050 02:01:19 GMT"}},
                          now),
            kExpired);
  EXPECT_EQ(parse_expires(H{{"Expires", date(kT0)}, {"Expires", date(kT0)}}, now), kT0);
}

TEST(Date, Rfc850TwoDigitYears_RFC9110_5_6_7) {
  // More than 50 years ahead of now is the century before.
  const int64_t y2026 = 1'780'000'000;
  EXPECT_EQ(parse_date(H{{"Date", "Sunday, 06-Nov-94 08:49:37 GMT"}}, "Date", y2026), 784111777);
  EXPECT_EQ(parse_date(H{{"Date", "Thursday, 18-Aug-50 02:01:18 GMT"}}, "Date", y2026), 2544400878);
  EXPECT_FALSE(parse_date(H{{"Date", "junk"}}, "Date", y2026));
  EXPECT_EQ(http::parse_http_date("Sun Nov  6 08:49:37 1994"), 784111777);
  EXPECT_EQ(http::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777);
}

// ------------------------------------------------------------ §3 storing

TEST(Storable, MethodAndStatus_3) {
  const H fresh = {{"Cache-Control", "max-age=60"}};
  EXPECT_EQ(store_get(fresh), Verdict::Storable);
  EXPECT_EQ(storable("HEAD", {}, 200, fresh, {}), Verdict::Method);
  EXPECT_EQ(storable("POST", {}, 200, fresh, {}), Verdict::Method);
  EXPECT_EQ(storable("get", {}, 200, fresh, {}), Verdict::Method);  // methods are case-sensitive
  EXPECT_EQ(store_get(fresh, 304), Verdict::Status);
  EXPECT_EQ(store_get(fresh, 103), Verdict::Status);
  EXPECT_EQ(store_get(fresh, 206), Verdict::Status);  // no §3.4 combining here
  Policy partial;
  partial.store_partial = true;
  EXPECT_EQ(store_get(fresh, 206, {}, partial), Verdict::Storable);
  // Any final status with explicit freshness, even one we do not know.
  for (int status : {201, 302, 303, 307, 400, 403, 500, 502, 503, 504, 599}) {
    EXPECT_EQ(store_get(fresh, status), Verdict::Storable) << status;
  }
}

TEST(Storable, StatusAndDirectives) {
  EXPECT_EQ(store_get({{"Cache-Control", "max-age=10"}}), Verdict::Storable);
  EXPECT_EQ(store_get({}), Verdict::Storable);  // 200: heuristically cacheable
  EXPECT_EQ(store_get({{"Cache-Control", "no-store"}}), Verdict::NoStore);
  EXPECT_EQ(store_get({{"Cache-Control", "private, max-age=10"}}), Verdict::Private);
  EXPECT_EQ(store_get({}, 404), Verdict::Storable);      // heuristically cacheable (RFC 9110 15.1)
  EXPECT_EQ(store_get({}, 500), Verdict::NotCacheable);  // only with explicit freshness
  EXPECT_EQ(store_get({{"Cache-Control", "max-age=10"}}, 500), Verdict::Storable);
  EXPECT_EQ(store_get({{"Cache-Control", "max-age=10"}}, 206), Verdict::Status);
  EXPECT_EQ(store_get({}, 302), Verdict::NotCacheable);
  EXPECT_EQ(store_get({{"Expires", date(kT0 + 1000)}}, 302), Verdict::Storable);
}

TEST(Storable, EndToEndDropsHopByHopAndConnectionNamed) {
  const H in = {{"Date", "x"},
                {"connection", "close, X-Private , keep-alive"},
                {"Keep-Alive", "5"},
                {"x-private", "secret"},
                {"Transfer-Encoding", "chunked"},
                {"Set-Cookie", "a=1"},
                {"Set-Cookie", "b=2"},
                {"Upgrade", "h2c"},
                {"Cache-Control", "max-age=1"}};
  const H kept = storable_headers(in, {});
  std::vector<std::string> names;
  for (const auto& h : kept) names.push_back(h.name + "=" + h.value);
  EXPECT_EQ(names, (std::vector<std::string>{"Date=x", "Set-Cookie=a=1", "Set-Cookie=b=2",
                                             "Cache-Control=max-age=1"}));
}

TEST(Storable, HeuristicallyCacheableOrPublic_3_and_4_2_2) {
  const H lm = {{"Date", date(kT0)}, {"Last-Modified", date(kT0 - 86400)}};
  for (int status : {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501}) {
    EXPECT_EQ(store_get(lm, status), Verdict::Storable) << status;
  }
  for (int status : {201, 202, 302, 403, 500, 502, 503, 504, 599}) {
    EXPECT_EQ(store_get(lm, status), Verdict::NotCacheable) << status;
  }
  H pub = lm;
  pub.push_back({"Cache-Control", "public"});
  EXPECT_EQ(store_get(pub, 599), Verdict::Storable);
  H expires = {{"Expires", date(kT0 + 60)}};
  EXPECT_EQ(store_get(expires, 500), Verdict::Storable);  // Expires is explicit freshness
  EXPECT_TRUE(heuristically_cacheable(206));
  EXPECT_FALSE(heuristically_cacheable(302));
}

TEST(Storable, NoStoreAndPrivate_5_2_2_5_and_5_2_2_7) {
  EXPECT_EQ(store_get({{"Cache-Control", "no-store"}}), Verdict::NoStore);
  EXPECT_EQ(store_get({{"Cache-Control", "No-StOrE, max-age=60"}, {"Expires", date(kT0 + 60)}}),
            Verdict::NoStore);
  EXPECT_EQ(store_get({{"Cache-Control", "max-age=60"}, {"cache-control", "no-store"}}),
            Verdict::NoStore);
  EXPECT_EQ(store_get({{"Cache-Control", "private, max-age=60"}}), Verdict::Private);
  // private="x": storable, without x.
  EXPECT_EQ(store_get({{"Cache-Control", "private=\"set-cookie\", max-age=60"}}),
            Verdict::Storable);
  // Request no-store (§5.2.1.5).
  EXPECT_EQ(store_get({{"Cache-Control", "max-age=60"}}, 200, {{"Cache-Control", "no-store"}}),
            Verdict::NoStore);
  // no-cache does not prevent storing (§5.2.2.4).
  EXPECT_EQ(store_get({{"Cache-Control", "no-cache"}}), Verdict::Storable);
}

TEST(Storable, MustUnderstand_5_2_2_3) {
  const H h = {{"Cache-Control", "max-age=3600, no-store, must-understand"}};
  EXPECT_EQ(store_get(h, 200), Verdict::Storable);  // overrides no-store
  EXPECT_EQ(store_get(h, 599), Verdict::Status);
  EXPECT_EQ(store_get(h, 206), Verdict::Status);  // we do not understand partial content
}

TEST(Storable, Authorization_3_5) {
  const H auth = {{"Authorization", "Basic dXNlcjpwYXNz"}};
  EXPECT_EQ(store_get({{"Cache-Control", "max-age=3600"}}, 200, auth), Verdict::Authorization);
  EXPECT_EQ(store_get({{"Expires", date(kT0 + 60)}}, 200, auth), Verdict::Authorization);
  EXPECT_EQ(store_get({{"Cache-Control", "max-age=3600, public"}}, 200, auth), Verdict::Storable);
  EXPECT_EQ(store_get({{"Cache-Control", "max-age=3600, must-revalidate"}}, 200, auth),
            Verdict::Storable);
  EXPECT_EQ(store_get({{"Cache-Control", "s-maxage=3600"}}, 200, auth), Verdict::Storable);
  EXPECT_EQ(store_get({{"Cache-Control", "max-age=3600, proxy-revalidate"}}, 200, auth),
            Verdict::Authorization);
  EXPECT_EQ(store_get({{"Cache-Control", "max-age=3600"}}, 200, {{"authorization", "x"}}),
            Verdict::Authorization);
}

TEST(Storable, VaryStarNeverMatches_4_1) {
  for (const H& h : {H{{"Vary", "*"}}, H{{"Vary", "*, *"}}, H{{"Vary", ", *"}},
                     H{{"Vary", "Foo, *"}}, H{{"Vary", "Foo"}, {"Vary", "*"}}}) {
    H r = h;
    r.push_back({"Cache-Control", "max-age=60"});
    EXPECT_EQ(store_get(r), Verdict::VaryAll) << h.back().value;
    EXPECT_FALSE(variant_key(r, {}));
  }
}

TEST(Storable, HeadersKeptAre_3_1) {
  const H h = {{"Connection", "close, X-Conn"},
               {"X-Conn", "1"},
               {"Keep-Alive", "timeout=5"},
               {"Transfer-Encoding", "chunked"},
               {"Proxy-Authenticate", "Basic"},
               {"Cache-Control", "no-cache=\"a, b\", max-age=60, private=\"Set-Cookie\""},
               {"A", "1"},
               {"b", "2"},
               {"C", "3"},
               {"set-cookie", "s=1"},
               {"Age", "5"}};
  const auto kept = storable_headers(h, {});
  std::vector<std::string> names;
  for (const auto& x : kept) names.push_back(x.name);
  EXPECT_EQ(names, (std::vector<std::string>{"Cache-Control", "C", "Age"}));
  // Vary is kept even when a list names it.
  const auto vary = storable_headers(H{{"Cache-Control", "private=\"vary\""}, {"Vary", "Foo"}}, {});
  EXPECT_EQ(http::field_lines(vary, "Vary").size(), 1U);
}

// ------------------------------------------------------------ §4.2 freshness

TEST(Freshness, LifetimeOrder_4_2_1) {
  const Policy p;
  EXPECT_EQ(freshness_lifetime(cc("max-age=10, s-maxage=20"), p), 20);
  EXPECT_EQ(freshness_lifetime(cc("s-maxage=20, max-age=10"), p), 20);
  EXPECT_EQ(freshness_lifetime(cc("max-age=10"), p), 10);
  Stored e = stored({{"Date", date(kT0)}, {"Expires", date(kT0 + 300)}});
  EXPECT_EQ(freshness_lifetime(e, p), 300);
  e.headers.push_back({"Cache-Control", "max-age=5"});  // max-age wins over Expires
  EXPECT_EQ(freshness_lifetime(e, p), 5);
  // Expires - Date, not Expires - now: Date from a clock 100 s ahead.
  const Stored skew = stored({{"Date", date(kT0 + 100)}, {"Expires", date(kT0 + 400)}});
  EXPECT_EQ(freshness_lifetime(skew, p), 300);
  // No Date: the time we received it.
  EXPECT_EQ(freshness_lifetime(stored({{"Expires", date(kT0 + 50)}}), p), 50);
  EXPECT_EQ(freshness_lifetime(stored({{"Expires", date(kT0 - 50)}}), p), 0);
  EXPECT_EQ(freshness_lifetime(stored({{"Expires", "0"}}), p), 0);  // invalid: expired
  EXPECT_EQ(freshness_lifetime(cc("max-age=x"), p), 0);
  // max-age=x and a future Expires: still stale (the invalid max-age wins).
  EXPECT_EQ(
      freshness_lifetime(stored({{"Cache-Control", "max-age=x"}, {"Expires", date(kT0 + 600)}}), p),
      0);
}

TEST(Freshness, NothingGrantedByDefault_4_2_2) {
  const Policy p;
  EXPECT_EQ(freshness_lifetime(stored({{"Date", date(kT0)}}), p), 0);
  EXPECT_EQ(decide(stored({{"Date", date(kT0)}}), p, kT0), Action::Revalidate);
  EXPECT_EQ(decide(cc("max-age=0"), p, kT0), Action::Revalidate);  // no stale window
  EXPECT_FALSE(usable_on_error(cc("max-age=0"), p, kT0 + 1));
}

TEST(Freshness, HeuristicTenPercentCapped_4_2_2) {
  const Policy p;  // 10%, at most a day
  const Stored day_old = stored({{"Date", date(kT0)}, {"Last-Modified", date(kT0 - 86400)}});
  EXPECT_TRUE(heuristic(day_old, p));
  EXPECT_EQ(freshness_lifetime(day_old, p), 8640);
  EXPECT_EQ(decide(day_old, p, kT0 + 8639), Action::Fresh);
  EXPECT_EQ(decide(day_old, p, kT0 + 8640), Action::Revalidate);
  const Stored year_old = stored({{"Date", date(kT0)}, {"Last-Modified", date(kT0 - 365 * 86400)}});
  EXPECT_EQ(freshness_lifetime(year_old, p), 86400);  // the cap
  Policy cap;
  cap.heuristic_cap = 600;
  EXPECT_EQ(freshness_lifetime(year_old, cap), 600);
  cap.heuristic_cap = 0;
  EXPECT_EQ(freshness_lifetime(year_old, cap), 0);
  const Stored five_s = stored({{"Date", date(kT0)}, {"Last-Modified", date(kT0 - 5)}});
  EXPECT_EQ(freshness_lifetime(five_s, p), 0);  // 0.5 s rounds down
  // Not for a status that is not heuristically cacheable, nor with Expires.
  EXPECT_EQ(freshness_lifetime(
                stored({{"Date", date(kT0)}, {"Last-Modified", date(kT0 - 86400)}}, 403), p),
            0);
  const Stored lm_expires = stored(
      {{"Date", date(kT0)}, {"Last-Modified", date(kT0 - 86400)}, {"Expires", date(kT0 - 1)}});
  EXPECT_FALSE(heuristic(lm_expires, p));
  EXPECT_EQ(freshness_lifetime(lm_expires, p), 0);
  // public makes any status eligible.
  EXPECT_EQ(freshness_lifetime(stored({{"Date", date(kT0)},
                                       {"Last-Modified", date(kT0 - 86400)},
                                       {"Cache-Control", "public"}},
                                      599),
                               p),
            8640);
  // A Last-Modified after Date gives nothing.
  EXPECT_EQ(freshness_lifetime(stored({{"Date", date(kT0)}, {"Last-Modified", date(kT0 + 9)}}), p),
            0);
}

TEST(Freshness, DefaultTtlOverrideOnlyWhereHeuristicsMay_4_2_2) {
  const Policy p = overrides(42, std::nullopt, std::nullopt);
  EXPECT_EQ(freshness_lifetime(stored({{"Date", date(kT0)}}), p), 42);
  EXPECT_EQ(freshness_lifetime(stored({{"Date", date(kT0)}}, 500), p), 0);
  EXPECT_EQ(freshness_lifetime(cc("max-age=7"), p), 7);  // the origin's word first
  EXPECT_EQ(freshness_lifetime(stored({{"Expires", date(kT0 - 1)}}), p), 0);
}

TEST(Freshness, CurrentAge_4_2_3) {
  // Origin clock 5 s behind our receipt; 2 s request delay; Age 3.
  Stored s = stored({{"Date", date(kT0 - 5)}, {"Age", "3"}, {"Cache-Control", "max-age=100"}});
  s.request_time = kT0 - 2;
  // apparent_age 5; corrected_age_value 3 + 2 = 5; plus 10 resident.
  EXPECT_EQ(current_age(s, kT0 + 10), 15);
  // A larger Age dominates: 50 + 2 + 10.
  Stored big = s;
  big.headers = {{"Date", date(kT0 - 5)}, {"Age", "50"}};
  EXPECT_EQ(current_age(big, kT0 + 10), 62);
  // No Date: our receipt time stands in, so only the residence counts.
  EXPECT_EQ(current_age(stored({{"Cache-Control", "max-age=100"}}), kT0 + 7), 7);
  // A Date in the future never makes the age negative.
  EXPECT_EQ(current_age(stored({{"Date", date(kT0 + 1000)}}), kT0), 0);
  // An invalid Age is ignored.
  EXPECT_EQ(current_age(stored({{"Date", date(kT0)}, {"Age", "7200.0"}}), kT0 + 1), 1);
}

TEST(Freshness, AgeBeyondMaxAgeIsStale_4_2_3) {
  const Policy p;
  const Stored s =
      stored({{"Date", date(kT0)}, {"Cache-Control", "max-age=3600"}, {"Age", "7200"}});
  EXPECT_EQ(decide(s, p, kT0), Action::Revalidate);
  for (const char* age : {"2147483647", "2147483648", "2147483649"}) {
    const Stored huge =
        stored({{"Date", date(kT0)}, {"Cache-Control", "max-age=3600"}, {"Age", age}});
    EXPECT_EQ(decide(huge, p, kT0), Action::Revalidate) << age;
  }
  const Stored cdn = stored({{"CDN-Cache-Control", "max-age=3600"}, {"Age", "7200"}});
  EXPECT_EQ(decide(cdn, p, kT0), Action::Revalidate);
}

// ------------------------------------------------------------ deciding

TEST(Decide, FreshThenStale_4_2) {
  const Policy p;
  const Stored s = cc("max-age=30");
  EXPECT_EQ(decide(s, p, kT0), Action::Fresh);
  EXPECT_EQ(decide(s, p, kT0 + 29), Action::Fresh);
  EXPECT_EQ(decide(s, p, kT0 + 30), Action::Revalidate);
}

TEST(Decide, StaleWhileRevalidateFromTheResponse_RFC5861_3) {
  const Policy p;
  const Stored s = cc("max-age=1, stale-while-revalidate=4");
  EXPECT_EQ(decide(s, p, kT0 + 1), Action::StaleRevalidate);
  EXPECT_EQ(decide(s, p, kT0 + 4), Action::StaleRevalidate);
  EXPECT_EQ(decide(s, p, kT0 + 5), Action::Revalidate);
}

TEST(Decide, OperatorStaleWhileRevalidateOnlyWhenTheResponseIsSilent_RFC5861) {
  const Policy p = overrides(std::nullopt, 10, std::nullopt);
  EXPECT_EQ(decide(cc("max-age=30"), p, kT0 + 39), Action::StaleRevalidate);
  EXPECT_EQ(decide(cc("max-age=30"), p, kT0 + 40), Action::Revalidate);
  EXPECT_EQ(decide(cc("max-age=30, stale-while-revalidate=100"), p, kT0 + 120),
            Action::StaleRevalidate);
  EXPECT_EQ(decide(cc("max-age=30, stale-while-revalidate=0"), p, kT0 + 31), Action::Revalidate);
}

TEST(Decide, StaleForbidden_4_2_4) {
  const Policy p = overrides(std::nullopt, 1000, 1000);
  for (const char* v :
       {"max-age=30, must-revalidate", "max-age=30, proxy-revalidate", "s-maxage=30",
        "max-age=30, no-cache", "max-age=30, must-revalidate, stale-while-revalidate=100"}) {
    EXPECT_FALSE(may_serve_stale(cc(v), p)) << v;
    EXPECT_EQ(decide(cc(v), p, kT0 + 31), Action::Revalidate) << v;
    EXPECT_FALSE(usable_on_error(cc(v), p, kT0 + 31)) << v;
  }
  // Fresh with must-revalidate: served as is.
  EXPECT_EQ(decide(cc("max-age=30, must-revalidate"), p, kT0 + 10), Action::Fresh);
}

TEST(Decide, NoCacheAlwaysRevalidates_5_2_2_4) {
  const Policy p;
  EXPECT_EQ(decide(cc("no-cache, max-age=3600"), p, kT0), Action::Revalidate);
  EXPECT_EQ(decide(cc("No-CaChE"), p, kT0), Action::Revalidate);
  // The qualified form only withholds the named fields.
  EXPECT_EQ(decide(cc("no-cache=\"a\", max-age=3600"), p, kT0), Action::Fresh);
}

TEST(Decide, ImmutableIsStillStaleWhenOld_RFC8246) {
  EXPECT_EQ(decide(cc("max-age=1, immutable"), {}, kT0 + 2), Action::Revalidate);
}

TEST(Decide, RequestDirectives_5_2_1) {
  const Policy p;
  const Stored s = cc("max-age=100");
  const auto req = [&](const char* v, int64_t now) {
    return decide(s, p, now, H{{"Cache-Control", v}});
  };
  EXPECT_EQ(req("max-age=10", kT0 + 5), Action::Fresh);
  EXPECT_EQ(req("max-age=10", kT0 + 11), Action::Revalidate);
  EXPECT_EQ(req("max-age=0", kT0 + 1), Action::Revalidate);
  EXPECT_EQ(req("min-fresh=50", kT0 + 40), Action::Fresh);
  EXPECT_EQ(req("min-fresh=50", kT0 + 60), Action::Revalidate);
  EXPECT_EQ(req("no-cache", kT0), Action::Revalidate);
  EXPECT_EQ(req("max-stale", kT0 + 5000), Action::Stale);
  EXPECT_EQ(req("max-stale=10", kT0 + 110), Action::Stale);
  EXPECT_EQ(req("max-stale=10", kT0 + 111), Action::Revalidate);
  EXPECT_EQ(req("only-if-cached", kT0 + 5), Action::Fresh);
  EXPECT_EQ(req("only-if-cached", kT0 + 200), Action::GatewayTimeout);
  EXPECT_EQ(req("only-if-cached, max-stale", kT0 + 200), Action::Stale);
  // max-stale never overrides must-revalidate (§5.2.2.2).
  EXPECT_EQ(decide(cc("max-age=1, must-revalidate"), p, kT0 + 5, H{{"Cache-Control", "max-stale"}}),
            Action::Revalidate);
  // Pragma: no-cache only without Cache-Control (§5.4).
  EXPECT_EQ(decide(s, p, kT0, H{{"Pragma", "no-cache"}}), Action::Revalidate);
  EXPECT_EQ(decide(s, p, kT0, H{{"Pragma", "no-cache"}, {"Cache-Control", "max-age=60"}}),
            Action::Fresh);
  EXPECT_EQ(decide(s, p, kT0, H{}), Action::Fresh);
}

TEST(StaleIfError, WindowAndRefusals_RFC5861_4) {
  const Policy none;
  EXPECT_TRUE(usable_on_error(cc("max-age=30"), none, kT0 + 10));  // fresh
  EXPECT_FALSE(usable_on_error(cc("max-age=30"), none, kT0 + 31));
  EXPECT_TRUE(usable_on_error(cc("max-age=2, stale-if-error=60"), none, kT0 + 61));
  EXPECT_FALSE(usable_on_error(cc("max-age=2, stale-if-error=60"), none, kT0 + 62));
  const Policy p = overrides(std::nullopt, std::nullopt, 300);
  EXPECT_TRUE(usable_on_error(cc("max-age=30"), p, kT0 + 329));
  EXPECT_FALSE(usable_on_error(cc("max-age=30"), p, kT0 + 330));
  EXPECT_FALSE(usable_on_error(cc("max-age=30, stale-if-error=0"), p, kT0 + 31));
  EXPECT_FALSE(usable_on_error(cc("no-cache"), p, kT0 + 1));
}

TEST(Disconnected, StaleWithinTheBoundUnlessForbidden_4_2_4) {
  Policy p;
  p.stale_if_disconnected = 600;
  EXPECT_TRUE(usable_when_disconnected(cc("max-age=30"), p, kT0 + 10));  // fresh
  EXPECT_TRUE(usable_when_disconnected(cc("max-age=30"), p, kT0 + 629));
  EXPECT_FALSE(usable_when_disconnected(cc("max-age=30"), p, kT0 + 630));
  // The response's own stale-if-error, when longer, still applies.
  EXPECT_TRUE(usable_when_disconnected(cc("max-age=2, stale-if-error=6000"), p, kT0 + 3000));
  for (const char* forbid : {"must-revalidate", "proxy-revalidate", "no-cache", "s-maxage=2"}) {
    EXPECT_FALSE(usable_when_disconnected(cc(std::string("max-age=2, ") + forbid), p, kT0 + 4))
        << forbid;
  }
  p.stale_if_disconnected = 0;
  EXPECT_FALSE(usable_when_disconnected(cc("max-age=30"), p, kT0 + 31));
}

// ------------------------------------------------------------ §4.1 Vary

TEST(Vary, SecondaryKeyFromNamedRequestFields_4_1) {
  const H resp = {{"Vary", "Accept-Language, Foo"}, {"vary", "bar"}};
  const auto k = variant_key(resp, H{{"foo", "1"}, {"Accept-Language", "en"}, {"Other", "x"}});
  ASSERT_TRUE(k);
  EXPECT_EQ(*k, "accept-language: en\nbar\nfoo: 1\n");
  EXPECT_EQ(variant_key(H{}, H{{"Foo", "1"}}), "");
  // Absent differs from empty.
  EXPECT_NE(variant_key(H{{"Vary", "Foo"}}, H{}), variant_key(H{{"Vary", "Foo"}}, H{{"Foo", ""}}));
}

TEST(Vary, Normalisation_4_1) {
  const H vary = {{"Vary", "Accept-Encoding, Foo"}};
  EXPECT_EQ(variant_key(vary, H{{"Accept-Encoding", "gzip, br"}, {"Foo", "a,b"}}),
            variant_key(vary, H{{"accept-encoding", "BR ,gzip"}, {"FOO", "a ,  b"}}));
  // Several lines combine.
  EXPECT_EQ(variant_key(vary, H{{"Foo", "a"}, {"Foo", "b"}}),
            variant_key(vary, H{{"Foo", "a, b"}}));
  // Whitespace inside a member is folded, not removed; parameters lose theirs.
  EXPECT_EQ(variant_key(vary, H{{"Foo", "a   b"}}), variant_key(vary, H{{"Foo", "a b"}}));
  EXPECT_NE(variant_key(vary, H{{"Foo", "a b"}}), variant_key(vary, H{{"Foo", "ab"}}));
  EXPECT_EQ(variant_key(vary, H{{"Accept-Encoding", "gzip ; q=0.5"}}),
            variant_key(vary, H{{"Accept-Encoding", "gzip;q=0.5"}}));
  // Order matters for fields other than Accept-Encoding.
  EXPECT_NE(variant_key(vary, H{{"Foo", "a, b"}}), variant_key(vary, H{{"Foo", "b, a"}}));
}

TEST(Vary, MatchingAStoredVariant_4_1) {
  Stored s = stored({{"Cache-Control", "max-age=60"}, {"Vary", "Foo, Bar"}});
  s.variant = *variant_key(s.headers, H{{"Foo", "1"}, {"Bar", "2"}});
  EXPECT_TRUE(variant_matches(s, H{{"bar", "2"}, {"foo", "1"}}));
  EXPECT_FALSE(variant_matches(s, H{{"Foo", "1"}, {"Bar", "3"}}));
  EXPECT_FALSE(variant_matches(s, H{{"Foo", "1"}}));
  Stored none = stored({{"Cache-Control", "max-age=60"}, {"Vary", "Foo"}});
  none.variant = *variant_key(none.headers, H{});
  EXPECT_TRUE(variant_matches(none, H{{"Other", "x"}}));
  EXPECT_FALSE(variant_matches(none, H{{"Foo", "1"}}));
}

// ------------------------------------------------------------ §4.3.4 304

TEST(NotModified, UpdatesStoredHeaders_4_3_4) {
  const H old = {{"Cache-Control", "max-age=1"},
                 {"Content-Length", "36"},
                 {"Test-Header", "A"},
                 {"Set-Cookie", "a=1"},
                 {"Set-Cookie", "b=1"},
                 {"ETag", "\"e1\""},
                 {"Kept", "yes"}};
  const H r304 = {{"Cache-Control", "max-age=3600"},
                  {"Content-Length", "10"},
                  {"Test-Header", "B"},
                  {"Set-Cookie", "a=2"},
                  {"Connection", "close, X-Hop"},
                  {"X-Hop", "1"},
                  {"Keep-Alive", "timeout=1"},
                  {"ETag", "\"e1\""}};
  const auto u = updated_headers(old, r304);
  const auto get = [&](std::string_view name) { return http::field_lines(u, name); };
  EXPECT_EQ(get("Cache-Control"), (std::vector<std::string_view>{"max-age=3600"}));
  EXPECT_EQ(get("Content-Length"), (std::vector<std::string_view>{"36"}));  // ours, kept
  EXPECT_EQ(get("Test-Header"), (std::vector<std::string_view>{"B"}));
  EXPECT_EQ(get("Set-Cookie"), (std::vector<std::string_view>{"a=2"}));  // all lines replaced
  EXPECT_EQ(get("Kept"), (std::vector<std::string_view>{"yes"}));
  EXPECT_TRUE(get("X-Hop").empty());
  EXPECT_TRUE(get("Connection").empty());
  EXPECT_TRUE(get("Keep-Alive").empty());
  EXPECT_EQ(get("ETag").size(), 1U);
}

TEST(NotModified, RefreshRenewsFreshness_4_3_4) {
  const Policy p;
  Stored old = cc("max-age=30");
  old.variant = "foo: 1\n";
  EXPECT_EQ(decide(old, p, kT0 + 100), Action::Revalidate);
  const Stored s = refreshed(old, H{{"Cache-Control", "max-age=50"}, {"Date", date(kT0 + 100)}},
                             kT0 + 100, kT0 + 100);
  EXPECT_EQ(s.variant, "foo: 1\n");
  EXPECT_EQ(s.status, 200);
  EXPECT_EQ(decide(s, p, kT0 + 149), Action::Fresh);
  EXPECT_EQ(decide(s, p, kT0 + 150), Action::Revalidate);
  // A 304 without Cache-Control keeps the stored directives, with new times.
  const Stored kept = refreshed(old, H{{"Date", date(kT0 + 100)}}, kT0 + 100, kT0 + 100);
  EXPECT_EQ(decide(kept, p, kT0 + 129), Action::Fresh);
  EXPECT_EQ(decide(kept, p, kT0 + 130), Action::Revalidate);
}

TEST(NotModified, WhichStoredResponseItApplies_4_3_4) {
  const H stored_h = {{"ETag", "\"e1\""}, {"Last-Modified", date(kT0 - 100)}};
  EXPECT_TRUE(not_modified_applies(stored_h, H{{"ETag", "\"e1\""}}));
  EXPECT_FALSE(not_modified_applies(stored_h, H{{"ETag", "\"e2\""}}));
  EXPECT_FALSE(not_modified_applies(stored_h, H{{"ETag", "W/\"e1\""}}));
  // An ETag decides before Last-Modified.
  EXPECT_FALSE(
      not_modified_applies(stored_h, H{{"ETag", "\"e2\""}, {"Last-Modified", date(kT0 - 100)}}));
  EXPECT_TRUE(not_modified_applies(stored_h, H{{"Last-Modified", date(kT0 - 100)}}));
  EXPECT_FALSE(not_modified_applies(stored_h, H{{"Last-Modified", date(kT0 - 99)}}));
  EXPECT_FALSE(not_modified_applies(H{}, H{{"ETag", "\"e1\""}}));
  EXPECT_TRUE(not_modified_applies(stored_h, H{{"Date", date(kT0)}}));
}

TEST(Serving, AgeIsOursAndSingle_5_1) {
  Stored s = stored({{"Date", date(kT0)}, {"Age", "10"}, {"X", "1"}, {"age", "3"}});
  const auto h = served_headers(s, kT0 + 5);
  EXPECT_EQ(http::field_lines(h, "Age"), (std::vector<std::string_view>{"15"}));
  EXPECT_EQ(http::field_lines(h, "X"), (std::vector<std::string_view>{"1"}));
  EXPECT_EQ(h.size(), 3U);
}

// ------------------------------------------------------------ §4.4 invalidation

TEST(Invalidation, UnsafeMethodsWithNonErrorStatus_4_4) {
  EXPECT_EQ(invalidation_targets("POST", 200, "/a?x=1", "h", {}),
            (std::vector<std::string>{"/a?x=1"}));
  for (const char* m : {"PUT", "DELETE", "PATCH", "M-SEARCH"}) {
    EXPECT_EQ(invalidation_targets(m, 204, "/a", "h", {}).size(), 1U) << m;
  }
  for (const char* m : {"GET", "HEAD", "OPTIONS", "TRACE"}) {
    EXPECT_TRUE(is_safe(m));
    EXPECT_TRUE(invalidation_targets(m, 200, "/a", "h", {}).empty()) << m;
  }
  EXPECT_TRUE(invalidation_targets("POST", 404, "/a", "h", {}).empty());
  EXPECT_TRUE(invalidation_targets("POST", 500, "/a", "h", {}).empty());
  EXPECT_EQ(invalidation_targets("POST", 303, "/a", "h", {}).size(), 1U);
  // The key is the one Pull uses: path normalised and %-encoded.
  EXPECT_EQ(invalidation_targets("POST", 200, "/a/./b/../c%20d", "h", {}),
            (std::vector<std::string>{"/a/c%20d"}));
}

TEST(Invalidation, SameOriginLocationAndContentLocation_4_4) {
  const H same = {{"Location", "http://h/loc?q"}, {"Content-Location", "/cl"}};
  EXPECT_EQ(invalidation_targets("POST", 201, "/dir/a", "h", same),
            (std::vector<std::string>{"/dir/a", "/loc?q", "/cl"}));
  const H relative = {{"Location", "b#frag"}, {"Content-Location", "?z=1"}};
  EXPECT_EQ(invalidation_targets("PUT", 200, "/dir/a", "h", relative),
            (std::vector<std::string>{"/dir/a", "/dir/b", "/dir/a?z=1"}));
  const H other = {{"Location", "http://evil/x"},
                   {"Content-Location", "//evil/y"},
                   {"Content-Location", "/second-line-ignored"}};
  EXPECT_EQ(invalidation_targets("POST", 200, "/a", "h", other), (std::vector<std::string>{"/a"}));
  EXPECT_EQ(invalidation_targets("POST", 200, "/a", "H:8080", H{{"Location", "https://h:8080"}}),
            (std::vector<std::string>{"/a", "/"}));
  EXPECT_EQ(invalidation_targets("POST", 200, "/a", "h", H{{"Location", "mailto:x@h"}}),
            (std::vector<std::string>{"/a"}));
  EXPECT_EQ(invalidation_targets("POST", 200, "/a", "h", H{{"Location", "/a"}}),
            (std::vector<std::string>{"/a"}));  // no duplicates
  EXPECT_EQ(invalidation_targets("POST", 200, "/a", "h", H{{"Location", "/../../x"}}),
            (std::vector<std::string>{"/a"}));  // climbs above the root: not a key
}

}  // namespace
}  // namespace cdn::replica::cache
