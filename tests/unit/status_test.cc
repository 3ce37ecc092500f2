// SPDX-License-Identifier: MIT
#include "common/status/status.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

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
  s.sites = "default a";
  s.hosts = "a.example www.a.example";
  s.host_sites = "a.example=a www.a.example=a";
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

// What the prober reads 10,000 times a second goes through the fast path,
// equal to the full decoder: documents of this and of older replicas.
TEST(StatusFastPath, DecodesWhatReplicasEncode) {
  ReplicaStatus full = sample();
  ReplicaStatus zeros;
  zeros.name = "n";
  for (const std::string& text :
       {encode(full), encode(zeros),
        // An older replica: no cache fields.
        std::string(R"({"name":"a","source":"root:/x","state":"draining","active_connections":3,)"
                    R"("capacity":10,"requests_total":4,"bytes_total":0,"bytes_per_second":2.5,)"
                    R"("load":0.3,"uptime_seconds":12,"version":"0.0.9"})"),
        std::string(" {\n \"load\" : 1e-3 ,\"state\":\"serving\",\t\"name\":\"\"}\r\n"),
        // Unknown keys of a newer replica, with scalar values.
        std::string(R"({"name":"x","state":"starting","load":0,"future":"yes","n":12.5E+3})")}) {
    SCOPED_TRACE(text);
    const auto fast = detail::decode_fast(text);
    ASSERT_TRUE(fast);
    const auto slow = detail::decode_full(text);
    ASSERT_TRUE(slow);
    EXPECT_EQ(*fast, *slow);
    EXPECT_EQ(decode(text), fast);
  }
  EXPECT_EQ(detail::decode_fast(encode(full)), full);
  EXPECT_EQ(detail::decode_fast(encode(zeros)), zeros);
}

// Anything unusual is left to nlohmann (nullopt: not sure), whether the full
// decoder then accepts it or not; decode() answers as the full decoder does.
TEST(StatusFastPath, LeavesTheUnusualToTheFullDecoder) {
  const std::string base = R"("state":"serving","load":0.5)";
  for (const std::string& text : std::vector<std::string>{
           R"({"name":"a\u0062",)" + base + "}",                            // escape
           "{\"name\":\"caf\xc3\xa9\"," + base + "}",                       // UTF-8
           R"({"name":"a","name":"b",)" + base + "}",                       // duplicate key
           R"({"name":"a","x":[1,{"y":null}],)" + base + "}",               // nested unknown value
           R"({"name":"a","x":true,)" + base + "}",                         // literal
           R"({"name":"a","capacity":-0,)" + base + "}",                    // sign
           R"({"name":"a","capacity":99999999999999999999,)" + base + "}",  // past 64 bits
           R"({"name":"a","load":1e999,"state":"serving"})",                // out of range
           "\xef\xbb\xbf{\"name\":\"a\"," + base + "}",                     // BOM
           R"({"name":"a",)" + base + ",}",                                 // trailing comma
           R"({"name":"a","capacity":01,)" + base + "}",                    // leading zero
           R"({"name":"a","capacity":1.0,)" + base + "}",                   // float count
           R"({"name":1,)" + base + "}",                                    // wrong type
           R"({"name":"a","state":"serving"})",                             // missing load
           R"({"name":"a",)" + base + "} x",                                // trailing bytes
       }) {
    SCOPED_TRACE(text);
    EXPECT_FALSE(detail::decode_fast(text));
    EXPECT_EQ(decode(text), detail::decode_full(text));
  }
  // Some of them are status documents all the same.
  EXPECT_EQ(decode(R"({"name":"a\u0062",)" + base + "}")->name, "ab");
  EXPECT_EQ(decode(R"({"name":"a","name":"b",)" + base + "}")->name, "b");
  EXPECT_TRUE(decode(R"({"name":"a","x":[1,{"y":null}],)" + base + "}"));
}

// Single corrupted bytes: whatever the fast path accepts, the full decoder
// decodes equal, and decode() answers as the full decoder does.
TEST(StatusFastPath, AgreesWithTheFullDecoderOnByteFlips) {
  const std::string text = encode(sample());
  size_t accepted = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    for (char c : {'\0', '"', '{', '}', '-', 'x', '\xff', '9', '0', '.', 'e', ',', ' ', '\\'}) {
      std::string t = text;
      t[i] = c;
      const auto fast = detail::decode_fast(t);
      const auto slow = detail::decode_full(t);
      if (fast) {
        ++accepted;
        ASSERT_TRUE(slow) << t;
        EXPECT_EQ(*fast, *slow) << t;
      }
      EXPECT_EQ(decode(t), slow) << t;
    }
  }
  EXPECT_GT(accepted, 0u);  // flips inside names and figures stay documents
}

}  // namespace
}  // namespace cdn::status
