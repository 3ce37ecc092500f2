#include "common/metrics/prometheus.hpp"

#include "common/metrics/counter.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <thread>

namespace cdn::metrics {
namespace {

// One thread counts while another reads (a status page on another worker):
// the reader sees the count only grow, and the end figure is exact.
TEST(OwnCounter, OneWriterAnyReader) {
  constexpr uint64_t kCount = 200'000;
  OwnCounter c;
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (uint64_t i = 0; i < kCount; ++i) ++c;
    c += 10;
    c -= 10;
    done = true;
  });
  uint64_t last = 0;
  bool grew_only = true;
  while (!done) {
    const uint64_t now = c;
    grew_only = grew_only && now >= last;
    last = now;
  }
  writer.join();
  EXPECT_TRUE(grew_only);
  EXPECT_EQ(c.get(), kCount);
  OwnCounter copy = c;
  --copy;
  EXPECT_EQ(copy.get(), kCount - 1);
  EXPECT_EQ(c.get(), kCount);
}

TEST(Prometheus, FamilyThenSamples) {
  std::string page;
  PrometheusWriter w(page);
  w.metric("cdn_x_requests_total", Type::Counter, "Requests answered.", uint64_t{7});
  w.family("cdn_x_up", Type::Gauge, "1 when up.");
  w.sample({{"replica", "a:80"}}, 1.0);
  w.sample({{"replica", "b:80"}, {"state", "down"}}, 0.0);
  EXPECT_EQ(page,
            "# HELP cdn_x_requests_total Requests answered.\n"
            "# TYPE cdn_x_requests_total counter\n"
            "cdn_x_requests_total 7\n"
            "# HELP cdn_x_up 1 when up.\n"
            "# TYPE cdn_x_up gauge\n"
            "cdn_x_up{replica=\"a:80\"} 1\n"
            "cdn_x_up{replica=\"b:80\",state=\"down\"} 0\n");
}

TEST(Prometheus, EscapesHelpAndLabelValues) {
  std::string page;
  PrometheusWriter w(page);
  w.family("m", Type::Gauge, "a \\ b\nc \"q\"");
  w.sample({{"l", "x\\y\n\"z\""}}, 2.5);
  // HELP escapes backslash and line feed only; a label value also '"'.
  EXPECT_EQ(page,
            "# HELP m a \\\\ b\\nc \"q\"\n"
            "# TYPE m gauge\n"
            "m{l=\"x\\\\y\\n\\\"z\\\"\"} 2.5\n");
}

TEST(Prometheus, CountersAreExactIntegers) {
  std::string page;
  PrometheusWriter w(page);
  w.metric("c_total", Type::Counter, "h", std::numeric_limits<uint64_t>::max());
  EXPECT_NE(page.find("\nc_total 18446744073709551615\n"), std::string::npos) << page;
}

TEST(Prometheus, SpecialValuesAsPrometheusSpellsThem) {
  EXPECT_EQ(format_value(std::nan("")), "NaN");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(format_value(0.001), "0.001");
  EXPECT_EQ(format_value(-3.0), "-3");
  EXPECT_EQ(format_value(1e300), "1e+300");
}

#ifndef NDEBUG
TEST(PrometheusDeathTest, AFamilyTwiceIsABug) {
  EXPECT_DEATH(
      {
        std::string page;
        PrometheusWriter w(page);
        w.family("m", Type::Gauge, "h");
        w.family("m", Type::Gauge, "h");
      },
      "once per page");
}
#endif

}  // namespace
}  // namespace cdn::metrics
