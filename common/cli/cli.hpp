// SPDX-License-Identifier: MIT
// What the three programs' command lines share: errors that start with the
// program's name (CLI11's own too), --version with the build's features,
// numbers whose range is checked with a message that says so, and one
// parse step that turns --help/--version/usage errors into an exit code.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>

namespace cdn::cli {

// Exit code of a command-line mistake, for all three programs.
inline constexpr int kUsage = 2;

// "cdn-get 0.1.0" and a second line with the build's features, e.g.
// "features: +systemd -debug-hooks; libuv 1.44.2".
std::string version_text(const std::string& program);

// Every parse error reads "PROGRAM: what (see PROGRAM --help)"; --version
// prints version_text(); `footer` (exit codes, files) ends --help.
void setup(CLI::App& app, const std::string& program, const std::string& footer);

// A check for a whole number in [min, max]: "70000 is out of range (0 to 65535)"
// or "'x' is not a whole number (0 to 65535)". Runs before CLI11 converts the
// value, so a number too big for the option's type never reaches CLI11's own
// "Could not convert".
CLI::Validator whole_number(uint64_t min, uint64_t max);

// An optional port option ("-p,--port"), 0 to 65535, its default shown in --help.
CLI::Option* add_port(CLI::App& app, const std::string& names, std::optional<uint16_t>& port,
                      const std::string& description, const std::string& default_text);

// app.parse(); on --help or --version the exit code 0, on a mistake kUsage
// (the message printed), otherwise nullopt: go on.
std::optional<int> parse(CLI::App& app, int argc, char** argv);

}  // namespace cdn::cli
