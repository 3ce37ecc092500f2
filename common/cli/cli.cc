// SPDX-License-Identifier: MIT
#include "common/cli/cli.hpp"

#include <uv.h>

#include "cdn_config.h"
#include "common/config/ini.hpp"

namespace cdn::cli {

std::string version_text(const std::string& program) {
  std::string features;
  features += CDN_HAVE_SYSTEMD ? "+systemd" : "-systemd";
  features += CDN_DEBUG_HOOKS ? " +debug-hooks" : " -debug-hooks";
#ifdef NDEBUG
  features += " +release";
#else
  features += " -release";
#endif
  return program + " " + CDN_VERSION + "\nfeatures: " + features + "; libuv " +
         uv_version_string() + ", CLI11 " + CLI11_VERSION;
}

void setup(CLI::App& app, const std::string& program, const std::string& footer) {
  app.name(program);
  app.failure_message([program](const CLI::App*, const CLI::Error& e) {
    return program + ": " + e.what() + " (see " + program + " --help)\n";
  });
  app.set_version_flag("--version", [program] { return version_text(program); });
  if (!footer.empty()) app.footer(footer);
}

CLI::Validator whole_number(uint64_t min, uint64_t max) {
  const std::string range = std::to_string(min) + " to " + std::to_string(max);
  return CLI::Validator(
      [min, max, range](std::string& s) -> std::string {
        const auto v = config::parse_uint(s);
        if (!v) {
          // Digits alone too big for 64 bits are out of range as well.
          const bool digits = !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
          return digits ? s + " is out of range (" + range + ")"
                        : "'" + s + "' is not a whole number (" + range + ")";
        }
        if (*v < min || *v > max) return s + " is out of range (" + range + ")";
        return {};
      },
      range, "whole number");
}

CLI::Option* add_port(CLI::App& app, const std::string& names, std::optional<uint16_t>& port,
                      const std::string& description, const std::string& default_text) {
  auto* opt = app.add_option(names, port, description)->check(whole_number(0, 65535));
  if (!default_text.empty()) opt->default_str(default_text);
  return opt;
}

std::optional<int> parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kUsage;
  }
  return std::nullopt;
}

}  // namespace cdn::cli
