// SPDX-License-Identifier: MIT
// Logging set-up shared by the daemons and cdn-get. After setup() the
// program logs with spdlog's free functions (spdlog::info("... {}", x)).
// Under systemd (JOURNAL_STREAM names our stderr) lines go to journald over
// its native protocol, with PRIORITY= from the level and any structured
// fields in effect (see Fields and event() below); otherwise to the console;
// `file` adds a plain log file. Console and file lines never show the fields,
// so output outside journald is the same with or without them.
#pragma once

#include <spdlog/spdlog.h>

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace cdn::log {

// Throws std::runtime_error when the level is unknown or the file cannot be opened.
// `console_level`, when given, filters the console (or journal) alone: cdn-get
// keeps its terminal quiet while its -l file records every attempt.
void setup(std::string_view program, const std::string& level, const std::string& file,
           const std::string& console_level = "");

// True when stderr is connected to the journal (systemd's JOURNAL_STREAM
// matches the device and inode of fd 2), as Waybar's logToJournalIfRunAsService.
bool stderr_is_journal();

// One journal field, e.g. {"CDN_REPLICA", "127.0.0.2:33000"}. The name is
// what `journalctl FIELD=value` matches: upper-case letters, digits and '_',
// not starting with '_' or a digit, at most 64 characters; a field with
// another name is dropped. Both views need only outlive the call they are
// passed to (Fields copies them).
struct Field {
  std::string_view name;
  std::string_view value;
};

// The fields every line logged on this thread carries while the object
// lives (RAII; nestable, inner scopes add to outer ones). Loggers here are
// synchronous, so the journal sink reads them on the logging thread itself.
// Use it around a piece of work that logs several lines about one thing.
class Fields {
 public:
  explicit Fields(std::initializer_list<Field> fields);
  ~Fields();
  Fields(const Fields&) = delete;
  Fields& operator=(const Fields&) = delete;

 private:
  size_t previous_size_;
};

// The names used by the daemons, so that an operator's queries are stable.
inline constexpr std::string_view kReplica = "CDN_REPLICA";  // host:port of a replica
inline constexpr std::string_view kClient = "CDN_CLIENT";    // peer address of a client
inline constexpr std::string_view kPath = "CDN_PATH";        // request path
inline constexpr std::string_view kStatus = "CDN_STATUS";    // HTTP status answered

// One line with fields of its own:
//   log::event(spdlog::level::warn, {{log::kReplica, addr}}, "replica {} is down", addr);
// Costs one level check when the level is filtered out (the fields are views).
template <typename... Args>
void event(spdlog::level::level_enum level, std::initializer_list<Field> fields,
           spdlog::format_string_t<Args...> fmt, Args&&... args) {
  auto* logger = spdlog::default_logger_raw();
  if (logger == nullptr || !logger->should_log(level)) return;
  const Fields scope(fields);
  logger->log(level, fmt, std::forward<Args>(args)...);
}

}  // namespace cdn::log
