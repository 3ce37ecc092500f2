// SPDX-License-Identifier: MIT
// The command line both daemons share: -c, -p, -a, -l, --name, --log-level, --workers,
// --check-config, --print-config, --version, the --help footer (exit codes,
// files, signals). Each daemon adds its own flags after these, and applies
// them with apply_common() over the INI file's settings: flags over INI over
// defaults.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>

#include "common/config/settings.hpp"

namespace cdn::daemon {

struct CommonFlags {
  std::string config;
  std::optional<uint16_t> port;
  std::string address;
  std::string logfile;
  std::string name;
  std::string log_level;
  std::string workers;  // "auto" or 1..kMaxWorkers (checked by the parser); empty: not given
  bool check = false;
  bool print_config = false;
};

// `program` is "cdn-replicad" or "cdn-balancerd", `default_config` its INI
// file; `files` the extra lines of --help's FILES part.
void add_common_flags(CLI::App& app, CommonFlags& f, const std::string& program,
                      const std::string& default_config, const std::string& files);

// [server] and [log] overrides from the flags given.
void apply_common(const CommonFlags& f, config::ServerSettings& server, config::LogSettings& log);

// What --check-config and --print-config do once the settings are loaded:
// nullopt when neither was given (the daemon starts), else the exit code.
// `summary` is --check-config's line after "configuration OK: ".
template <typename Settings>
std::optional<int> answer_config_flags(const CommonFlags& f, const Settings& s,
                                       const std::string& summary) {
  if (f.print_config) {
    // Written to stdout: if that fails, there is no one left to tell.
    (void)std::fputs(config::to_ini(s).c_str(), stdout);
    return 0;
  }
  if (f.check) {
    std::printf("configuration OK: %s\n", summary.c_str());
    return 0;
  }
  return std::nullopt;
}

}  // namespace cdn::daemon
