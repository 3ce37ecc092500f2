// SPDX-License-Identifier: MIT
// cdn-balancerd: probes every replica and sends each client to the best one.
// The seed's command line (-s SERVERS_FILE -p PORT -l LOGFILE) keeps
// working; flags override the INI file.
#include <spdlog/spdlog.h>
#include <uv.h>

#include <sys/stat.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <stdexcept>

#include "cdn_config.h"
#include "common/cli/cli.hpp"
#include "common/config/ini.hpp"
#include "common/config/settings.hpp"
#include "common/log/log.hpp"
#include "common/uv/handle.hpp"
#include "daemons/balancerd/balancer.hpp"
#include "daemons/flags.hpp"
#include "daemons/lifecycle.hpp"

namespace {

struct Flags {
  cdn::daemon::CommonFlags common;
  std::string servers;
  std::vector<std::string> replicas;
  std::string policy;
};

cdn::config::BalancerSettings load(const Flags& f, const cdn::daemon::ConfigSource& src) {
  cdn::config::BalancerSettings s;
  if (!src.path.empty()) {
    auto ini = cdn::config::load_ini(src.path);
    if (f.common.port) {
      // -p goes into the file's [server] port before the settings are built,
      // so bare hosts of the file's replicas take the port the balancer uses.
      ini.entries.erase(std::remove_if(ini.entries.begin(), ini.entries.end(),
                                       [](const cdn::config::Entry& e) {
                                         return e.section == "server" && e.key == "port";
                                       }),
                        ini.entries.end());
      ini.entries.push_back({"server", "port", std::to_string(*f.common.port), 0});
    }
    s = cdn::config::balancer_settings(ini);
  }
  cdn::daemon::apply_common(f.common, s.server, s.log);
  if (!f.policy.empty()) s.balance.policy = cdn::config::parse_policy(f.policy, "--policy");
  if (!f.servers.empty() || !f.replicas.empty()) {
    // Replicas named on the command line replace the file's list.
    s.replicas.clear();
    s.servers_file = f.servers;
    for (const auto& r : f.replicas) {
      try {
        s.replicas.push_back(cdn::config::parse_replica_entry(r, s.server.port));
      } catch (const cdn::config::Error& e) {
        throw cdn::config::Error(std::string("--replica: ") + e.what());
      }
    }
    if (!f.servers.empty()) {
      // The seed's servers.txt: a bare host takes the balancer's own port.
      for (auto& r : cdn::config::load_servers(f.servers, s.server.port)) {
        s.replicas.push_back(std::move(r));
      }
    }
  }
  cdn::config::validate(s, src.path.empty() ? std::string("command line") : src.path);
  return s;
}

// [admin] state_dir must be a directory the balancer can write its purge
// ledger in: found now (start-up error, refused reload) rather than at the
// first purge, when nothing but a log line could say so.
void check_state_dir(const cdn::config::BalancerSettings& s) {
  if (s.state_dir.empty()) return;
  struct stat st {};
  int err = 0;
  const bool found = ::stat(s.state_dir.c_str(), &st) == 0;
  if (found && !S_ISDIR(st.st_mode)) {
    err = ENOTDIR;
  } else if (!found || ::access(s.state_dir.c_str(), W_OK | X_OK) != 0) {
    err = errno;
  }
  if (err != 0) {
    throw std::runtime_error("[admin] state_dir " + s.state_dir + ": " + std::strerror(err));
  }
}

// Descriptors at the limits: the client connections, a probe connection per
// replica, and listeners, logs and the resolver's sockets.
uint64_t descriptors_needed(const cdn::config::BalancerSettings& s) {
  return static_cast<uint64_t>(s.server.max_connections) + s.replicas.size() + 64;
}

}  // namespace

static int run_main(int argc, char** argv) {
  cdn::daemon::hold_signals();
  CLI::App app{"cdn-balancerd: sends each client to the best replica"};
  Flags f;
  cdn::daemon::add_common_flags(app, f.common, "cdn-balancerd", CDN_SYSCONFDIR "/balancerd.ini",
                                "  [replicas] servers_file: one replica host[:port] a line\n");
  app.add_option("-s,--servers", f.servers,
                 "servers file: one replica host[:port] [options] a line");
  app.add_option("--replica", f.replicas,
                 "a replica \"host[:port] [weight=N] [host=NAME] [tls_port=N]\" (repeatable; "
                 "weight: round-robin; tls_port, host: its https:// URL)");
  app.add_option("--policy", f.policy, "best, round-robin, least-loaded, p2c, consistent")
      ->default_str(std::string(cdn::config::to_string(cdn::config::BalanceSettings{}.policy)));
  if (auto rc = cdn::cli::parse(app, argc, argv)) return *rc;

  const auto src = cdn::daemon::config_source(f.common.config, CDN_SYSCONFDIR "/balancerd.ini");
  cdn::config::BalancerSettings settings;
  try {
    settings = load(f, src);
    if (f.common.print_config) return *cdn::daemon::answer_config_flags(f.common, settings, "");
    check_state_dir(settings);
    cdn::log::setup("cdn-balancerd", settings.log.level, settings.log.file);
  } catch (const std::exception& e) {
    (void)std::fprintf(stderr, "cdn-balancerd: %s\n", e.what());
    return 1;
  }
  if (auto rc = cdn::daemon::answer_config_flags(
          f.common, settings,
          std::to_string(settings.replicas.size()) + " replicas, policy " +
              std::string(cdn::config::to_string(settings.balance.policy)))) {
    return *rc;
  }

  cdn::daemon::raise_nofile_limit(descriptors_needed(settings));
  uv_loop_t loop;
  uv_loop_init(&loop);
  cdn::daemon::Lifecycle life(&loop);
  int rc = 0;
  {
    std::optional<cdn::balancer::Balancer> made;
    try {
      made.emplace(&loop, settings);  // reads the [tls] certificates
    } catch (const std::exception& e) {
      spdlog::critical("{}", e.what());
      (void)std::fprintf(stderr, "cdn-balancerd: %s\n", e.what());
      return life.end(1);
    }
    cdn::balancer::Balancer& balancer = *made;
    try {
      balancer.start();
    } catch (const std::exception& e) {
      spdlog::critical("{}", e.what());
      balancer.stop();
      return life.end(1);
    }
    cdn::daemon::Hooks hooks;
    hooks.reload = [&]() {
      try {
        auto next = load(f, src);
        check_state_dir(next);
        auto observers = cdn::daemon::prepare_observers(balancer.requests(), next.log, next.admin);
        auto tls = cdn::daemon::prepare_tls_reload(balancer.tls().get(), balancer.settings().tls,
                                                   next.tls);
        const auto tls_settings = next.tls;
        cdn::log::setup("cdn-balancerd", next.log.level, next.log.file);
        cdn::daemon::check_nofile(descriptors_needed(next));
        balancer.reconfigure(std::move(next), observers);
        cdn::daemon::install_tls_reload(balancer.tls().get(), std::move(tls), tls_settings);
        return true;
      } catch (const std::exception& e) {
        spdlog::error("reload refused, keeping the running configuration: {}", e.what());
        return false;
      }
    };
    hooks.drain = [&](std::function<void()> done) { balancer.drain(std::move(done)); };
    hooks.stop_now = [&]() { balancer.stop(); };
    hooks.status_line = [&]() { return balancer.status_line(); };
    hooks.drain_timeout = [&]() { return balancer.settings().server.drain_timeout; };
    hooks.workers_alive = [&](auto since) { return balancer.workers_alive(since); };
    if (balancer.stall_worker_hook()) hooks.stall_worker = [&]() { balancer.stall_worker(); };
    rc = life.run(std::move(hooks));
  }
  spdlog::info("stopped");
  return rc;
}

// What the body did not catch ends the process with a message and exit code
// 1, not std::terminate (bugprone-exception-escape).
int main(int argc, char** argv) {
  try {
    return run_main(argc, argv);
  } catch (const std::exception& e) {
    (void)std::fprintf(stderr, "cdn-balancerd: %s\n", e.what());
  } catch (...) {
    (void)std::fprintf(stderr, "cdn-balancerd: unknown exception\n");
  }
  return 1;
}
