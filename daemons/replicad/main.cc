// SPDX-License-Identifier: MIT
// cdn-replicad: an edge server holding a copy of a site and serving it.
// The seed's command line (-p PORT -l LOGFILE -w WEBPAGE) keeps working;
// flags override the INI file.
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <uv.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <optional>

#include "cdn_config.h"
#include "common/cli/cli.hpp"
#include "common/config/ini.hpp"
#include "common/config/settings.hpp"
#include "common/log/log.hpp"
#include "common/uv/handle.hpp"
#include "daemons/flags.hpp"
#include "daemons/lifecycle.hpp"
#include "daemons/replicad/replica.hpp"

namespace {

struct Flags {
  cdn::daemon::CommonFlags common;
  std::string webpage;
  std::string root;
};

// The INI file (if any) plus the flags: what the daemon runs with.
cdn::config::ReplicaSettings load(const Flags& f, const cdn::daemon::ConfigSource& src) {
  cdn::config::ReplicaSettings s;
  if (!src.path.empty()) s = cdn::config::replica_settings(cdn::config::load_ini(src.path));
  cdn::daemon::apply_common(f.common, s.server, s.log);
  if (!f.root.empty() || !f.webpage.empty()) {
    s.content.root.clear();
    s.content.page.clear();
    s.content.origin.clear();
  }
  if (!f.root.empty()) s.content.root = f.root;
  if (!f.webpage.empty()) {
    // The seed's -w names a web page: a local file or directory when one
    // exists by that name, otherwise the host or URL of an origin.
    struct stat st {};
    if (::stat(f.webpage.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) {
        s.content.root = f.webpage;
      } else {
        s.content.page = f.webpage;
      }
    } else {
      s.content.origin = cdn::config::normalize_origin(f.webpage);
    }
  }
  cdn::config::validate(s, src.path.empty() ? std::string("command line") : src.path);
  return s;
}

// Descriptors at the limits: the client connections, and a margin for the
// files being sent, origin connections, the cache, listeners and logs.
uint64_t descriptors_needed(const cdn::config::ReplicaSettings& s) {
  return static_cast<uint64_t>(s.server.max_connections) + 1024;
}

bool same_source(const cdn::config::ContentSettings& a, const cdn::config::ContentSettings& b) {
  return a.root == b.root && a.page == b.page && a.origin == b.origin && a.index == b.index;
}

}  // namespace

static int run_main(int argc, char** argv) {
  cdn::daemon::hold_signals();
  CLI::App app{"cdn-replicad: serves a copy of a site (a directory, a page or an origin)"};
  Flags f;
  cdn::daemon::add_common_flags(app, f.common, "cdn-replicad", CDN_SYSCONFDIR "/replicad.ini",
                                "  [content] root, page or origin: what is served\n"
                                "  [content] cache_dir (with origin=): the edge cache\n");
  app.add_option("-w,--webpage", f.webpage,
                 "page to serve: a local file or directory, or an origin host/URL");
  app.add_option("-r,--root", f.root, "directory to serve");
  if (auto rc = cdn::cli::parse(app, argc, argv)) return *rc;

  const auto src = cdn::daemon::config_source(f.common.config, CDN_SYSCONFDIR "/replicad.ini");
  cdn::config::ReplicaSettings settings;
  std::unique_ptr<cdn::replica::Store> store;
  try {
    settings = load(f, src);
    if (f.common.print_config) return *cdn::daemon::answer_config_flags(f.common, settings, "");
    cdn::log::setup("cdn-replicad", settings.log.level, settings.log.file);
    store = cdn::replica::open_store(settings.content);
  } catch (const std::exception& e) {
    (void)std::fprintf(stderr, "cdn-replicad: %s\n", e.what());
    return 1;
  }
  std::string source = store ? store->source()
                       : cdn::config::has_default_site(settings)
                           ? "origin:" + settings.content.origin
                           : "";
  for (const auto& site : settings.sites) {
    source += (source.empty() ? "site " : ", site ") + site.name;
  }
  if (auto rc = cdn::daemon::answer_config_flags(f.common, settings, source)) return *rc;

  cdn::daemon::raise_nofile_limit(descriptors_needed(settings));
  uv_loop_t loop;
  uv_loop_init(&loop);
  // Before any slow step (the start page may take an origin's timeout).
  cdn::daemon::Lifecycle life(&loop);
  std::unique_ptr<cdn::replica::Replicas> replica_ptr;
  try {
    replica_ptr = std::make_unique<cdn::replica::Replicas>(&loop, settings, std::move(store));
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    (void)std::fprintf(stderr, "cdn-replicad: %s\n", e.what());
    return life.end(1);
  }
  cdn::replica::Replicas& replica = *replica_ptr;
  try {
    replica.start();
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    replica.stop();
    return life.end(1);
  }
  // Like the seed, have the start page before saying READY=1.
  if (std::string why;
      !replica.prefetch_start_page(why, [&life] { return life.stop_requested(); })) {
    replica.stop();
    if (life.stop_requested()) {
      spdlog::info("stopped during start-up, before the start page came");
      return life.end(0);
    }
    // `why` names the site when there are several.
    const std::string origin =
        settings.sites.empty() ? settings.content.origin : std::string("a site's origin");
    spdlog::critical("cannot fetch the start page from {} and no cached copy exists: {}", origin,
                     why);
    (void)std::fprintf(stderr, "cdn-replicad: cannot fetch the start page from %s: %s\n",
                       origin.c_str(), why.c_str());
    return life.end(1);
  }

  cdn::daemon::Hooks hooks;
  hooks.reload = [&]() {
    try {
      // Everything that can refuse the file comes before anything is
      // applied, [log] included: a refused reload changes nothing.
      auto next = load(f, src);
      std::unique_ptr<cdn::replica::Store> next_store;
      if (!same_source(next.content, replica.settings().content)) {
        if (!next.content.origin.empty() || !replica.settings().content.origin.empty()) {
          throw std::runtime_error(
              "switching to, from or between origins takes a restart (the cache is tied to one)");
        }
        next_store = cdn::replica::open_store(next.content);
      }
      // The access log opened and the token read (either may throw) before
      // anything is applied.
      auto observers = cdn::daemon::prepare_observers(replica.requests(), next.log, next.admin);
      cdn::daemon::check_nofile(descriptors_needed(next));
      auto tls = cdn::daemon::prepare_tls_reload(replica.tls(), replica.settings().tls, next.tls,
                                                 cdn::daemon::site_certificates(next));
      const auto tls_settings = next.tls;
      // Every site that changed opened (a bad one throws, naming it) before
      // any is applied: the running sites serve on as they were.
      auto sites = replica.open_sites(next, std::move(next_store));
      try {
        // Replaces the logger only once the new one is built (a log file
        // that cannot be opened throws here and keeps the old one).
        cdn::log::setup("cdn-replicad", next.log.level, next.log.file);
      } catch (...) {
        replica.discard(std::move(sites));
        throw;
      }
      replica.reconfigure(std::move(next), std::move(sites), observers);
      cdn::daemon::install_tls_reload(replica.tls(), std::move(tls), tls_settings);
      return true;
    } catch (const std::exception& e) {
      spdlog::error("reload refused, keeping the running configuration: {}", e.what());
      return false;
    }
  };
  hooks.drain = [&](std::function<void()> done) { replica.drain(std::move(done)); };
  hooks.stop_now = [&]() { replica.stop(); };
  hooks.status_line = [&]() { return replica.status_line(); };
  hooks.drain_timeout = [&]() { return replica.settings().server.drain_timeout; };
  hooks.workers_alive = [&](auto since) { return replica.workers_alive(since); };
  if (replica.stall_worker_hook()) hooks.stall_worker = [&]() { replica.stall_worker(); };
  const int rc = life.run(std::move(hooks));
  spdlog::info("stopped");
  return rc;
}

// What the body did not catch ends the process with a message and exit code
// 1, not std::terminate (bugprone-exception-escape).
int main(int argc, char** argv) {
  try {
    return run_main(argc, argv);
  } catch (const std::exception& e) {
    (void)std::fprintf(stderr, "cdn-replicad: %s\n", e.what());
  } catch (...) {
    (void)std::fprintf(stderr, "cdn-replicad: unknown exception\n");
  }
  return 1;
}
