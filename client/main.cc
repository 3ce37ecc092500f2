// SPDX-License-Identifier: MIT
// cdn-get: download a file through the CDN.
//   cdn-get http://BALANCER:33000/path [-o FILE]   the modern form
//   cdn-get -s BALANCER -p PORT -l LOGFILE         the seed's form: saves "/" as website.html
#include <spdlog/sinks/sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <optional>

#include "cdn_config.h"
#include "client/fetch.hpp"
#include "client/progress.hpp"
#include "common/cli/cli.hpp"
#include "common/config/ini.hpp"
#include "common/log/log.hpp"

namespace {

// The name to save a URL's target under: its last path segment, or
// index.html for a directory.
std::string default_output(const std::string& target) {
  std::string path = target.substr(0, target.find_first_of("?#"));
  const size_t slash = path.rfind('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") return "index.html";
  return name;
}

int usage(const std::string& message) {
  (void)std::fprintf(stderr, "cdn-get: %s (see cdn-get --help)\n", message.c_str());
  return cdn::get::kUsage;
}

// -o DIR (an existing directory, or a name ending in '/') saves into it.
std::string into_directory(const std::string& output, const std::string& name) {
  struct stat st {};
  const bool dir =
      output.ends_with('/') || (::stat(output.c_str(), &st) == 0 && S_ISDIR(st.st_mode));
  if (!dir) return output;
  return output.ends_with('/') ? output + name : output + "/" + name;
}

constexpr const char* kFooter =
    "Exit codes:\n"
    "  0    saved (and verified against the replica's length and digest)\n"
    "  2    command-line error\n"
    "  3    no replica: the balancer unreachable, or none up for longer than --wait\n"
    "  4    the transfer failed on every replica\n"
    "  5    the content failed verification on every replica\n"
    "  6    the output file could not be written\n"
    "  7    not found: a replica answered 404 or 410\n"
    "  130  interrupted (SIGINT/SIGTERM); no temporary file is left\n"
    "\n"
    "Files: FILE is written as .FILE.cdn-get.XXXXXX beside it, then renamed.";

}  // namespace

static int run_main(int argc, char** argv) {
  CLI::App app{"cdn-get: download a file through the CDN, verified, written atomically"};
  cdn::cli::setup(app, "cdn-get", kFooter);
  std::string url, output, balancer, logfile, wait = "30s", timeout = "10s";
  std::optional<uint16_t> port;
  bool quiet = false, verbose = false;
  app.add_option("url", url, "http[s]://BALANCER[:PORT]/path");
  app.add_option("-o,--output", output, "file or directory to write ('-': standard output)")
      ->default_str("the URL's last segment");
  app.add_option("-s,--server", balancer, "balancer host (the seed's form)");
  cdn::cli::add_port(app, "-p,--port", port, "balancer port (with -s)", "33000");
  app.add_option("-l,--log", logfile, "append a log of the attempts to this file");
  app.add_option("--wait", wait, "how long to wait for a replica to be up (e.g. 30s, 0)")
      ->default_str(wait);
  app.add_option("--timeout", timeout, "an attempt with no progress for this long fails")
      ->default_str(timeout);
  std::string cacert;
  bool insecure = false;
  app.add_option("--cacert", cacert,
                 "trust the certificates of this PEM file for https:// (not the system's)");
  app.add_flag("--insecure", insecure,
               "https://: do not check the certificate or host name (warns on stderr)");
  bool resume = false;
  app.add_flag("-c,--continue", resume,
               "resume a partial FILE: ask for the rest, check the digest of the whole");
  app.add_flag("-q,--quiet", quiet, "print nothing on success");
  app.add_flag("-v,--verbose", verbose, "print every attempt");
  if (auto rc = cdn::cli::parse(app, argc, argv)) return *rc;

  cdn::get::Options opt;
  std::string err;
  if (!url.empty() && !balancer.empty()) return usage("give a URL or -s BALANCER, not both");
  if (!url.empty()) {
    if (port) return usage("-p goes with -s; put the port in the URL");
    if (!cdn::get::parse_url(url, opt.start, err)) return usage(err);
    opt.output = output.empty() ? default_output(opt.start.target)
                                : into_directory(output, default_output(opt.start.target));
  } else if (!balancer.empty()) {
    // The seed's client: ask the balancer for its page, save it as website.html.
    std::string text = "http://" + balancer;
    if (port)
      text += ":" + std::to_string(*port);
    else if (balancer.find(':') == std::string::npos || balancer.front() == '[')
      text += ":33000";
    text += "/";
    if (!cdn::get::parse_url(text, opt.start, err)) return usage(err);
    opt.output = output.empty() ? "website.html" : into_directory(output, "website.html");
  } else {
    return usage("no URL: cdn-get http://BALANCER:33000/path, or cdn-get -s BALANCER -p PORT");
  }
  if (resume && opt.output == "-") return usage("--continue needs a file, not standard output");
  opt.resume = resume;
  auto w = cdn::config::parse_duration(wait);
  auto t = cdn::config::parse_duration(timeout);
  if (!w) return usage("--wait '" + wait + "' is not a duration (e.g. 30s, 500ms)");
  if (!t || t->count() == 0) return usage("--timeout '" + timeout + "' is not a positive duration");
  opt.wait = *w;
  opt.timeout = *t;
  // Built whatever the first URL: a plain balancer may name https:// replicas.
  auto tls = cdn::tls::ClientContext::build({cacert, !insecure});
  if (!tls.context) return usage("--cacert: " + tls.error);
  opt.tls = tls.context;
  if (insecure) {
    (void)std::fputs(
        "cdn-get: warning: --insecure: https:// servers' certificates and names are not "
        "checked\n",
        stderr);
  }

  try {
    // The console shows only what matters; the -l file gets every attempt.
    // Messages for people start with the program's name; -v shows the
    // console log (every attempt, timestamped) instead.
    cdn::log::setup("cdn-get", "info", logfile, verbose ? "info" : "warn");
    if (!verbose && !cdn::log::stderr_is_journal()) {
      // A warning on a terminal is a message for a person: no timestamp.
      spdlog::default_logger()->sinks().front()->set_pattern("cdn-get: %v");
    }
  } catch (const std::exception& e) {
    return usage(e.what());
  }

  // Outlives the block: fetch() calls on_wait long after it.
  bool told = false;
  if (!quiet) {
    opt.on_wait = [&told](const std::string& why, std::chrono::milliseconds delay) {
      if (told) return;  // once: the wait is one state, not news every second
      told = true;
      (void)std::fprintf(stderr, "cdn-get: %s, retrying (next in %lld ms)\n", why.c_str(),
                         static_cast<long long>(delay.count()));
    };
  }
  // The progress line: on a terminal only, redrawn in place.
  cdn::get::Progress progress;
  bool drawn = false;
  if (!quiet && isatty(STDERR_FILENO) == 1) {
    opt.on_body_start = [&](uint64_t bytes, uint64_t total, const std::string& replica) {
      progress.start(std::chrono::steady_clock::now(), bytes, total, replica);
    };
    opt.on_body_progress = [&](uint64_t bytes) {
      if (auto line = progress.update(std::chrono::steady_clock::now(), bytes)) {
        (void)std::fprintf(stderr, "\r%s\x1b[K", line->c_str());
        drawn = true;
      }
    };
  }
  spdlog::info("fetching {}{} into {}", opt.start.authority(), opt.start.target, opt.output);
  const auto result = cdn::get::fetch(opt);
  if (drawn) (void)std::fputs("\r\x1b[K", stderr);  // the line gives way to the outcome
  if (result.exit_code == cdn::get::kOk) {
    spdlog::info("{}", result.message);
    // With -o - standard output is the file: the message must not join it.
    if (!quiet)
      (void)std::fprintf(opt.output == "-" ? stderr : stdout, "%s\n", result.message.c_str());
    return 0;
  }
  spdlog::error("{}", result.message);
  (void)std::fprintf(stderr, "cdn-get: %s\n", result.message.c_str());
  for (const auto& f : result.failures) (void)std::fprintf(stderr, "  %s\n", f.c_str());
  return result.exit_code;
}

// What the body did not catch ends the process with a message and exit code
// 1, not std::terminate (bugprone-exception-escape).
int main(int argc, char** argv) {
  try {
    return run_main(argc, argv);
  } catch (const std::exception& e) {
    (void)std::fprintf(stderr, "cdn-get: %s\n", e.what());
  } catch (...) {
    (void)std::fprintf(stderr, "cdn-get: unknown exception\n");
  }
  return 1;
}
