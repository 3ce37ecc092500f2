// SPDX-License-Identifier: MIT
#include "common/metrics/prometheus.hpp"

#include "common/metrics/counter.hpp"
#include "common/metrics/process.hpp"

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
  // += and -= after the reader is done: a reader between the two would
  // rightly see the count go down.
  c += 10;
  c -= 10;
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

namespace cdn::metrics {
namespace {

TEST(Prometheus, HistogramIsCumulativeWithSumAndCount) {
  static constexpr std::array<double, 3> kBounds = {0.1, 0.5, 1};
  Histogram h(kBounds);
  for (double v : {0.0625, 0.1, 0.25, 0.75, 5.0}) h.observe(v);
  Histogram other(kBounds);
  other.observe(0.125);
  h.merge(other);
  EXPECT_EQ(h.count(), 6u);
  std::string page;
  PrometheusWriter w(page);
  w.family("cdn_x_request_duration_seconds", Type::Histogram, "Durations.");
  w.histogram({{"site", "a"}}, h);
  EXPECT_EQ(page,
            "# HELP cdn_x_request_duration_seconds Durations.\n"
            "# TYPE cdn_x_request_duration_seconds histogram\n"
            "cdn_x_request_duration_seconds_bucket{site=\"a\",le=\"0.1\"} 2\n"
            "cdn_x_request_duration_seconds_bucket{site=\"a\",le=\"0.5\"} 4\n"
            "cdn_x_request_duration_seconds_bucket{site=\"a\",le=\"1\"} 5\n"
            "cdn_x_request_duration_seconds_bucket{site=\"a\",le=\"+Inf\"} 6\n"
            "cdn_x_request_duration_seconds_sum{site=\"a\"} 6.2875\n"
            "cdn_x_request_duration_seconds_count{site=\"a\"} 6\n");
}

TEST(Prometheus, DurationBucketsAscend) {
  const auto& b = Histogram::kDurationBuckets;
  for (size_t i = 1; i < b.size(); ++i) EXPECT_LT(b[i - 1], b[i]);
}

TEST(Process, ParsesProcSelfStat) {
  // A comm with a blank and a parenthesis: fields count from the last ')'.
  const std::string stat =
      "4242 (cdn-rep) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 3 0 "
      "123400 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";
  const auto s = parse_proc_stat(stat, 1'700'000'000, 100, 4096);
  ASSERT_TRUE(s);
  EXPECT_DOUBLE_EQ(s->cpu_seconds, 3.0);  // (250 + 50) / 100
  EXPECT_DOUBLE_EQ(s->start_time_seconds, 1'700'000'000 + 1234.0);
  EXPECT_EQ(s->virtual_bytes, 987654321u);
  EXPECT_EQ(s->resident_bytes, 2048u * 4096);
  EXPECT_FALSE(parse_proc_stat("garbage", 0, 100, 4096));
  EXPECT_FALSE(parse_proc_stat("1 (x) S 1 2 3", 0, 100, 4096));
}

TEST(Process, BootTime) {
  EXPECT_EQ(parse_boot_time("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n"), 1700000000);
  EXPECT_FALSE(parse_boot_time("cpu 1\n"));
}

TEST(Process, ThisProcess) {
  const auto s = read_process_stats();
  EXPECT_GT(s.resident_bytes, 0u);
  EXPECT_GE(s.open_fds, 3u);  // stdin, stdout, stderr
  EXPECT_GT(s.max_fds, 0u);
  EXPECT_GT(s.start_time_seconds, 1e9);
  std::string page;
  PrometheusWriter w(page);
  write_process_metrics(w, s);
  write_build_info(w, "1.2.3");
  for (const char* name :
       {"process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds ",
        "process_max_fds ", "process_start_time_seconds ", "process_virtual_memory_bytes ",
        "cdn_build_info{version=\"1.2.3\"} 1\n"}) {
    EXPECT_NE(page.find(std::string("\n") + name), std::string::npos) << name;
  }
}

}  // namespace
}  // namespace cdn::metrics
