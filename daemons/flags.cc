// SPDX-License-Identifier: MIT
#include "daemons/flags.hpp"

#include "common/cli/cli.hpp"

namespace cdn::daemon {

void add_common_flags(CLI::App& app, CommonFlags& f, const std::string& program,
                      const std::string& default_config, const std::string& files) {
  const config::ServerSettings server;
  const config::LogSettings log;
  cli::setup(app, program,
             "Settings: flags over the INI file over the built-in defaults (--print-config\n"
             "shows the result). Relative paths in the INI file are relative to its directory.\n"
             "\n"
             "Exit codes:\n"
             "  0  stopped after SIGINT/SIGTERM, or --check-config/--print-config succeeded\n"
             "  1  the configuration was refused, or start-up failed (the message says why)\n"
             "  2  command-line error\n"
             "\n"
             "Signals: SIGTERM/SIGINT drain then stop (twice: at once); SIGHUP reloads the\n"
             "INI file (refused as a whole if any value is bad).\n"
             "\n"
             "Files:\n"
             "  " +
                 default_config + "  read when present and no -c is given\n" + files);
  app.add_option("-c,--config", f.config, "INI file")->default_str(default_config);
  cli::add_port(app, "-p,--port", f.port, "port to listen on (0: any free port)",
                std::to_string(server.port));
  app.add_option("-a,--address", f.address, "address to listen on")->default_str(server.address);
  app.add_option("-l,--log", f.logfile, "also log to this file");
  app.add_option("--name", f.name, "name shown in status")->default_str("hostname:port");
  app.add_option("--log-level", f.log_level, "trace, debug, info, warn, error, critical, off")
      ->default_str(log.level);
  app.add_option("--workers", f.workers,
                 "event loops serving clients, each on a thread: auto (the online CPUs) or 1 to " +
                     std::to_string(config::kMaxWorkers))
      ->default_str(server.workers == 0 ? "auto" : std::to_string(server.workers))
      ->check(CLI::Validator(
          [](std::string& v) {
            if (v == "auto") return std::string();
            return cli::whole_number(1, config::kMaxWorkers)(v);
          },
          "auto|1.." + std::to_string(config::kMaxWorkers)));
  app.add_flag("--check-config", f.check, "validate the configuration and exit");
  app.add_flag("--print-config", f.print_config,
               "print the configuration in effect (defaults, INI file, flags) and exit");
}

void apply_common(const CommonFlags& f, config::ServerSettings& server, config::LogSettings& log) {
  if (f.port) server.port = *f.port;
  if (!f.address.empty()) server.address = f.address;
  if (!f.logfile.empty()) log.file = f.logfile;
  if (!f.log_level.empty()) log.level = f.log_level;
  if (!f.name.empty()) server.name = f.name;
  if (!f.workers.empty()) {
    server.workers = f.workers == "auto" ? 0 : static_cast<uint32_t>(std::stoul(f.workers));
  }
}

}  // namespace cdn::daemon
