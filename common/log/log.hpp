// Logging set-up shared by the daemons and cdn-get. After setup() the
// program logs with spdlog's free functions (spdlog::info("... {}", x)).
// Under systemd (JOURNAL_STREAM names our stderr) lines go to journald with
// priorities; otherwise to the console; `file` adds a plain log file.
#pragma once

#include <string>
#include <string_view>

namespace cdn::log {

// Throws std::runtime_error when the level is unknown or the file cannot be opened.
// `console_level`, when given, filters the console (or journal) alone: cdn-get
// keeps its terminal quiet while its -l file records every attempt.
void setup(std::string_view program, const std::string& level, const std::string& file,
           const std::string& console_level = "");

// True when stderr is connected to the journal (systemd's JOURNAL_STREAM
// matches the device and inode of fd 2), as Waybar's logToJournalIfRunAsService.
bool stderr_is_journal();

}  // namespace cdn::log
