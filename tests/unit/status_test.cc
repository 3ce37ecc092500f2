#include "common/status/status.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

namespace cdn::status {
namespace {

ReplicaStatus sample() {
  ReplicaStatus s;
  s.name = "edge-1:33000";
  s.source = "origin:http://example.org/";
  s.state = State::Serving;
  s.active_connections = 12;
  s.capacity = 1000;
  s.requests_total = 123456789012ULL;
  s.bytes_total = std::numeric_limits<uint64_t>::max();
  s.bytes_per_second = 1.5e6;
  s.load = 0.012;
  s.uptime_seconds = 3600.25;
  s.version = "0.1.0";
  s.cache_hits = 90;
  s.cache_misses = 10;
  s.cache_hit_ratio = 0.9;
  s.cache_bytes = 1ULL << 33;
  s.cache_objects = 7;
  s.origin_requests_total = 12;
  s.origin_errors_total = 2;
  return s;
}

TEST(StatusState, RoundTripsNames) {
  for (State s : {State::Starting, State::Serving, State::Draining}) {
    EXPECT_EQ(state_from_string(to_string(s)), s);
  }
  EXPECT_EQ(to_string(State::Starting), "starting");
  EXPECT_EQ(to_string(State::Serving), "serving");
  EXPECT_EQ(to_string(State::Draining), "draining");
  EXPECT_FALSE(state_from_string("Serving"));
  EXPECT_FALSE(state_from_string(""));
  EXPECT_FALSE(state_from_string("up"));
}

TEST(StatusCodec, RoundTripsEveryField) {
  const ReplicaStatus s = sample();
  auto back = decode(encode(s));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, s);
}

TEST(StatusCodec, RoundTripsEveryState) {
  for (State st : {State::Starting, State::Serving, State::Draining}) {
    ReplicaStatus s = sample();
    s.state = st;
    auto back = decode(encode(s));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->state, st);
  }
}

TEST(StatusCodec, EncodeWritesAllFieldsWithStateName) {
  const std::string text = encode(sample());
  for (const char* key :
       {"\"name\"", "\"source\"", "\"state\":\"serving\"", "\"active_connections\"", "\"capacity\"",
        "\"requests_total\"", "\"bytes_total\"", "\"bytes_per_second\"", "\"load\"",
        "\"uptime_seconds\"", "\"version\""}) {
    EXPECT_NE(text.find(key), std::string::npos) << key << " in " << text;
  }
}

TEST(StatusCodec, EncodeEscapesAndSurvivesBadUtf8) {
  ReplicaStatus s = sample();
  s.name = "quote\" back\\slash\nnewline";
  auto back = decode(encode(s));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->name, s.name);

  s.name = std::string("bad\xff\xfe utf8");
  std::string text;
  ASSERT_NO_THROW(text = encode(s));
  back = decode(text);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->name.substr(0, 3), "bad");
}

TEST(StatusCodec, EncodeNeverWritesNonFiniteFigures) {
  ReplicaStatus s = sample();
  s.load = std::numeric_limits<double>::quiet_NaN();
  s.bytes_per_second = std::numeric_limits<double>::infinity();
  s.uptime_seconds = -3;
  auto back = decode(encode(s));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->load, 0);
  EXPECT_EQ(back->bytes_per_second, 0);
  EXPECT_EQ(back->uptime_seconds, 0);
}

TEST(StatusCodec, MinimalDocumentTakesDefaults) {
  auto s = decode(R"({"name":"r","state":"draining","load":0.5})");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->name, "r");
  EXPECT_EQ(s->state, State::Draining);
  EXPECT_DOUBLE_EQ(s->load, 0.5);
  EXPECT_EQ(s->source, "");
  EXPECT_EQ(s->version, "");
  EXPECT_EQ(s->active_connections, 0u);
  EXPECT_EQ(s->capacity, 0u);
  EXPECT_EQ(s->requests_total, 0u);
  EXPECT_EQ(s->bytes_total, 0u);
  EXPECT_EQ(s->bytes_per_second, 0);
  EXPECT_EQ(s->uptime_seconds, 0);
}

TEST(StatusCodec, CacheFieldsAreOptionalAndChecked) {
  // A replica from before the edge cache sends none of them: all 0.
  const auto old = decode(R"({"name":"a","state":"serving","load":0.5,"requests_total":3})");
  ASSERT_TRUE(old);
  EXPECT_EQ(old->cache_hits, 0U);
  EXPECT_EQ(old->cache_bytes, 0U);
  EXPECT_EQ(old->cache_hit_ratio, 0.0);
  EXPECT_EQ(old->origin_errors_total, 0U);
  const auto now =
      decode(R"({"name":"a","state":"serving","load":0,"cache_hits":3,"cache_misses":1,)"
             R"("cache_hit_ratio":0.75,"cache_bytes":100,"cache_objects":2,)"
             R"("origin_requests_total":4,"origin_errors_total":1})");
  ASSERT_TRUE(now);
  EXPECT_EQ(now->cache_hits, 3U);
  EXPECT_EQ(now->cache_hit_ratio, 0.75);
  EXPECT_EQ(now->cache_bytes, 100U);
  EXPECT_EQ(now->origin_errors_total, 1U);
  EXPECT_FALSE(decode(R"({"name":"a","state":"serving","load":0,"cache_hits":-1})"));
  EXPECT_FALSE(decode(R"({"name":"a","state":"serving","load":0,"cache_hit_ratio":"x"})"));
  EXPECT_FALSE(decode(R"({"name":"a","state":"serving","load":0,"cache_bytes":1.5})"));
}

TEST(StatusCodec, IntegerLoadAndWhitespaceAccepted) {
  auto s = decode(" {\n \"load\" : 2 , \"state\":\"serving\", \"name\":\"\"}\n");
  ASSERT_TRUE(s);
  EXPECT_DOUBLE_EQ(s->load, 2.0);
  EXPECT_EQ(s->name, "");
}

TEST(StatusCodec, UnknownKeysIgnored) {
  auto s = decode(R"({"name":"r","state":"serving","load":0,"future":{"x":[1,2]},"n":null})");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->name, "r");
}

TEST(StatusCodec, RequiredFieldsMissing) {
  EXPECT_FALSE(decode(R"({"state":"serving","load":0})"));
  EXPECT_FALSE(decode(R"({"name":"r","load":0})"));
  EXPECT_FALSE(decode(R"({"name":"r","state":"serving"})"));
}

TEST(StatusCodec, RequiredFieldsWrongTypeOrValue) {
  EXPECT_FALSE(decode(R"({"name":1,"state":"serving","load":0})"));
  EXPECT_FALSE(decode(R"({"name":null,"state":"serving","load":0})"));
  EXPECT_FALSE(decode(R"({"name":"r","state":"up","load":0})"));
  EXPECT_FALSE(decode(R"({"name":"r","state":1,"load":0})"));
  EXPECT_FALSE(decode(R"({"name":"r","state":"serving","load":"0"})"));
  EXPECT_FALSE(decode(R"({"name":"r","state":"serving","load":-0.1})"));
  EXPECT_FALSE(decode(R"({"name":"r","state":"serving","load":true})"));
  EXPECT_FALSE(decode(R"({"name":"r","state":"serving","load":null})"));
}

TEST(StatusCodec, OptionalFieldsWrongType) {
  const std::string head = R"({"name":"r","state":"serving","load":0,)";
  for (const char* bad :
       {R"("source":1})", R"("version":[]})", R"("active_connections":-1})",
        R"("active_connections":1.5})", R"("capacity":"10"})", R"("capacity":1e3})",
        R"("requests_total":true})", R"("bytes_total":18446744073709551616})",
        R"("bytes_per_second":"fast"})", R"("bytes_per_second":-1})", R"("uptime_seconds":{}})",
        R"("source":null})"}) {
    EXPECT_FALSE(decode(head + bad)) << bad;
  }
}

TEST(StatusCodec, NonFiniteNumbersRejected) {
  EXPECT_FALSE(decode(R"({"name":"r","state":"serving","load":1e999})"));
  EXPECT_FALSE(decode(R"({"name":"r","state":"serving","load":NaN})"));
  EXPECT_FALSE(decode(R"({"name":"r","state":"serving","load":Infinity})"));
  EXPECT_FALSE(decode(R"({"name":"r","state":"serving","load":0,"uptime_seconds":-1e999})"));
}

TEST(StatusCodec, NotADocument) {
  for (const char* bad :
       {"", " ", "null", "[]", "\"x\"", "42", "{", "{}",
        R"({"name":"r","state":"serving","load":0)", R"({"name":"r","state":"serving","load":0}})",
        R"([{"name":"r","state":"serving","load":0}])", R"({'name':'r'})"}) {
    EXPECT_FALSE(decode(bad)) << bad;
  }
}

TEST(StatusCodec, InvalidUtf8Rejected) {
  EXPECT_FALSE(decode(std::string("{\"name\":\"\xff\",\"state\":\"serving\",\"load\":0}")));
}

TEST(StatusCodec, OversizedRejected) {
  std::string pad(kMaxDocumentBytes, ' ');
  EXPECT_FALSE(decode(R"({"name":"r","state":"serving","load":0})" + pad));
  std::string fits = R"({"name":"r","state":"serving","load":0})";
  fits += std::string(kMaxDocumentBytes - fits.size(), ' ');
  EXPECT_TRUE(decode(fits));
}

TEST(StatusCodec, DeepNestingDoesNotThrow) {
  std::string deep = R"({"name":"r","state":"serving","load":0,"x":)";
  deep += std::string(20000, '[') + std::string(20000, ']') + "}";
  EXPECT_TRUE(decode(deep));
  EXPECT_FALSE(decode(std::string(30000, '[')));
}

// Every prefix of a valid document (as a truncated probe answer would be) is
// rejected without throwing; only the whole document decodes.
TEST(StatusCodec, EveryPrefixRejected) {
  const std::string text = encode(sample());
  for (size_t n = 0; n < text.size(); ++n) {
    EXPECT_NO_THROW({ EXPECT_FALSE(decode(std::string_view(text).substr(0, n))) << n; });
  }
  EXPECT_TRUE(decode(text));
}

// A single corrupted byte anywhere never makes decode throw.
TEST(StatusCodec, ByteFlipsNeverThrow) {
  const std::string text = encode(sample());
  for (size_t i = 0; i < text.size(); ++i) {
    for (char c : {'\0', '"', '{', '}', '-', 'x', '\xff', '9'}) {
      std::string t = text;
      t[i] = c;
      EXPECT_NO_THROW(decode(t));
    }
  }
}

}  // namespace
}  // namespace cdn::status
