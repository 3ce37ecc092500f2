// SPDX-License-Identifier: MIT
#include "common/log/log.hpp"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "cdn_config.h"
#if CDN_HAVE_SYSTEMD
#include <systemd/sd-journal.h>
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

// The fields in effect on this thread, each "NAME=value", outermost first.
// Fields pushes and pops; the journal sink reads.
thread_local std::vector<std::string> t_fields;

bool valid_field_name(std::string_view name) {
  if (name.empty() || name.size() > 64 || name.front() == '_') return false;
  if (name.front() >= '0' && name.front() <= '9') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

int syslog_priority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
    case spdlog::level::debug:
      return LOG_DEBUG;
    case spdlog::level::info:
      return LOG_INFO;
    case spdlog::level::warn:
      return LOG_WARNING;
    case spdlog::level::err:
      return LOG_ERR;
    case spdlog::level::critical:
      return LOG_CRIT;
    default:
      return LOG_INFO;
  }
}

#if CDN_HAVE_SYSTEMD
// Writes each line to journald's native socket: MESSAGE, PRIORITY,
// SYSLOG_IDENTIFIER, the source location when spdlog has one, and the
// thread's fields. Should the socket refuse (full, gone), the line goes to
// stderr, which is the journal's stream here, with a "<N>" priority prefix.
class JournalSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit JournalSink(std::string identifier)
      : identifier_("SYSLOG_IDENTIFIER=" + std::move(identifier)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    const int priority = syslog_priority(msg.level);
    std::string message = "MESSAGE=";
    message.append(msg.payload.data(), msg.payload.size());
    const std::string prio = "PRIORITY=" + std::to_string(priority);
    std::string file, line, func;
    std::vector<iovec> iov;
    iov.reserve(6 + t_fields.size());
    auto add = [&iov](const std::string& s) {
      iov.push_back({const_cast<char*>(s.data()), s.size()});
    };
    add(message);
    add(prio);
    add(identifier_);
    if (!msg.source.empty()) {
      file = std::string("CODE_FILE=") + msg.source.filename;
      line = "CODE_LINE=" + std::to_string(msg.source.line);
      add(file);
      add(line);
      if (msg.source.funcname != nullptr) {
        func = std::string("CODE_FUNC=") + msg.source.funcname;
        add(func);
      }
    }
    for (const auto& f : t_fields) add(f);
    if (sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) < 0) {
      // Nothing is left to tell if stderr fails too.
      (void)std::fprintf(stderr, "<%d>%.*s\n", priority, static_cast<int>(msg.payload.size()),
                         msg.payload.data());
    }
  }
  void flush_() override {}

 private:
  const std::string identifier_;
};
#endif

spdlog::level::level_enum parse_level(const std::string& level) {
  auto lvl = spdlog::level::from_str(level);
  // from_str answers `off` for anything it does not know; only "off" may mean off.
  if (lvl == spdlog::level::off && level != "off") {
    throw std::runtime_error("unknown log level '" + level + "'");
  }
  return lvl;
}

}  // namespace

Fields::Fields(std::initializer_list<Field> fields) : previous_size_(t_fields.size()) {
  for (const auto& f : fields) {
    if (!valid_field_name(f.name)) continue;
    std::string entry;
    entry.reserve(f.name.size() + 1 + f.value.size());
    entry.append(f.name).append("=").append(f.value);
    t_fields.push_back(std::move(entry));
  }
}

Fields::~Fields() { t_fields.resize(previous_size_); }

void setup(std::string_view program, const std::string& level, const std::string& file,
           const std::string& console_level) {
  const auto lvl = parse_level(level);
  std::vector<spdlog::sink_ptr> sinks;
#if CDN_HAVE_SYSTEMD
  if (stderr_is_journal()) {
    // The journal stamps time, unit and PID itself.
    sinks.push_back(std::make_shared<JournalSink>(std::string(program)));
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
