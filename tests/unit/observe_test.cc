// SPDX-License-Identifier: MIT
// The request log's counts by site and status: what the metrics pages show,
// added up over the workers' logs, and read by one worker while another
// records (run under ThreadSanitizer by scripts/run-tests).
#include "daemons/observe.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>

namespace cdn::daemon {
namespace {

void record(RequestLog& log, int status, std::string_view site) {
  static const http::Request request;
  net::RequestRecord r{request, nullptr, "127.0.0.1", 0, 0, {}, {}, {}, true};
  r.status = status;
  r.duration = std::chrono::microseconds(300);
  log.record(r, site);
}

std::string page(std::initializer_list<const RequestLog*> logs) {
  std::string out;
  metrics::PrometheusWriter w(out);
  const std::vector<const RequestLog*> all(logs);
  RequestLog::write_metrics(all, w, "cdn_test");
  return out;
}

TEST(RequestLog, CountsBySiteAndCode) {
  RequestLog log("test");
  for (int i = 0; i < 3; ++i) record(log, 200, "a");
  record(log, 404, "b");
  const std::string m = page({&log});
  EXPECT_NE(m.find("cdn_test_responses_total{code=\"200\",site=\"a\"} 3\n"), std::string::npos)
      << m;
  EXPECT_NE(m.find("cdn_test_responses_total{code=\"404\",site=\"b\"} 1\n"), std::string::npos);
  EXPECT_EQ(m.find("code=\"404\",site=\"a\""), std::string::npos);
  EXPECT_NE(m.find("cdn_test_request_duration_seconds_count{site=\"a\"} 3\n"), std::string::npos);
}

TEST(RequestLog, WorkersLogsAddUpBySite) {
  RequestLog one("test"), two("test");
  record(one, 200, "a");
  record(two, 200, "b");
  record(two, 200, "a");
  const std::string m = page({&one, &two});
  EXPECT_NE(m.find("{code=\"200\",site=\"a\"} 2\n"), std::string::npos) << m;
  EXPECT_NE(m.find("{code=\"200\",site=\"b\"} 1\n"), std::string::npos);
  // Each site once, though two logs know it.
  const std::string a200 = "responses_total{code=\"200\",site=\"a\"}";
  EXPECT_EQ(m.find(a200), m.rfind(a200));
}

TEST(RequestLog, BeforeAnyAnswerTheHistogramFamilyShows) {
  RequestLog log("test");
  EXPECT_NE(page({&log}).find("cdn_test_request_duration_seconds_count{site=\"default\"} 0"),
            std::string::npos);
}

TEST(RequestLog, ReadWhileAnotherThreadAddsSites) {
  RequestLog log("test");
  constexpr int kSites = 40, kRounds = 50;
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (int round = 0; round < kRounds; ++round) {
      for (int s = 0; s < kSites; ++s) record(log, 200, "s" + std::to_string(s));
    }
    done = true;
  });
  size_t pages = 0;
  while (!done) {
    page({&log});
    ++pages;
  }
  writer.join();
  const std::string m = page({&log});
  for (int s = 0; s < kSites; ++s) {
    const std::string want =
        "{code=\"200\",site=\"s" + std::to_string(s) + "\"} " + std::to_string(kRounds) + "\n";
    EXPECT_NE(m.find(want), std::string::npos) << want;
  }
  EXPECT_GT(pages, 0u);
}

}  // namespace
}  // namespace cdn::daemon
