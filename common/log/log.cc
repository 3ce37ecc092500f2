#include "common/log/log.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <vector>

#include "cdn_config.h"
#if CDN_HAVE_SYSTEMD
#include <spdlog/sinks/systemd_sink.h>
#endif

namespace cdn::log {

bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return st.st_dev == dev && st.st_ino == ino;
}

namespace {
spdlog::level::level_enum parse_level(const std::string& level) {
  auto lvl = spdlog::level::from_str(level);
  // from_str answers `off` for anything it does not know; only "off" may mean off.
  if (lvl == spdlog::level::off && level != "off") {
    throw std::runtime_error("unknown log level '" + level + "'");
  }
  return lvl;
}
}  // namespace

void setup(std::string_view program, const std::string& level, const std::string& file,
           const std::string& console_level) {
  const auto lvl = parse_level(level);
  std::vector<spdlog::sink_ptr> sinks;
#if CDN_HAVE_SYSTEMD
  if (stderr_is_journal()) {
    // The journal stamps time, unit and PID itself.
    sinks.push_back(std::make_shared<spdlog::sinks::systemd_sink_mt>(std::string(program)));
  }
#endif
  if (sinks.empty()) {
    auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    console->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
    sinks.push_back(console);
  }
  if (!console_level.empty()) sinks.front()->set_level(parse_level(console_level));
  if (!file.empty()) {
    try {
      auto f = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file);
      f->set_pattern("%Y-%m-%d %H:%M:%S.%e [%n %P] %l %v");
      sinks.push_back(f);
    } catch (const spdlog::spdlog_ex& e) {
      throw std::runtime_error("log file " + file + ": " + e.what());
    }
  }
  auto logger = std::make_shared<spdlog::logger>(std::string(program), sinks.begin(), sinks.end());
  logger->set_level(console_level.empty() ? lvl : std::min(lvl, parse_level(console_level)));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace cdn::log
