// SPDX-License-Identifier: MIT
// cdn-get: download a file through the CDN.
//   cdn-get http://BALANCER:33000/path [-o FILE]   the modern form
//   cdn-get -s BALANCER -p PORT -l LOGFILE         the seed's form: saves "/" as website.html
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <optional>

#include "cdn_config.h"
#include "client/fetch.hpp"
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
  std::fprintf(stderr, "cdn-get: %s (see cdn-get --help)\n", message.c_str());
  return cdn::get::kUsage;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cdn-get: download a file through the CDN, verified, written atomically"};
  std::string url, output, balancer, logfile, wait = "30s", timeout = "10s";
  std::optional<uint16_t> port;
  bool quiet = false, verbose = false;
  app.add_option("url", url, "http://BALANCER[:PORT]/path");
  app.add_option("-o,--output", output, "file to write ('-': standard output)");
  app.add_option("-s,--server", balancer, "balancer host (the seed's form)");
  app.add_option("-p,--port", port, "balancer port (default 33000)");
  app.add_option("-l,--log", logfile, "append a log of the attempts to this file");
  app.add_option("--wait", wait, "how long to wait for a replica to be up (e.g. 30s, 0)");
  app.add_option("--timeout", timeout, "an attempt with no progress for this long fails");
  app.add_flag("-q,--quiet", quiet, "print nothing on success");
  app.add_flag("-v,--verbose", verbose, "print every attempt");
  app.set_version_flag("--version", CDN_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : cdn::get::kUsage;
  }

  cdn::get::Options opt;
  std::string err;
  if (!url.empty() && !balancer.empty()) return usage("give a URL or -s BALANCER, not both");
  if (!url.empty()) {
    if (port) return usage("-p goes with -s; put the port in the URL");
    if (!cdn::get::parse_url(url, opt.start, err)) return usage(err);
    opt.output = output.empty() ? default_output(opt.start.target) : output;
  } else if (!balancer.empty()) {
    // The seed's client: ask the balancer for its page, save it as website.html.
    std::string text = "http://" + balancer;
    if (port)
      text += ":" + std::to_string(*port);
    else if (balancer.find(':') == std::string::npos || balancer.front() == '[')
      text += ":33000";
    text += "/";
    if (!cdn::get::parse_url(text, opt.start, err)) return usage(err);
    opt.output = output.empty() ? "website.html" : output;
  } else {
    return usage("no URL: cdn-get http://BALANCER:33000/path, or cdn-get -s BALANCER -p PORT");
  }
  auto w = cdn::config::parse_duration(wait);
  auto t = cdn::config::parse_duration(timeout);
  if (!w) return usage("--wait '" + wait + "' is not a duration (e.g. 30s, 500ms)");
  if (!t || t->count() == 0) return usage("--timeout '" + timeout + "' is not a positive duration");
  opt.wait = *w;
  opt.timeout = *t;

  try {
    // The console shows only what matters; the -l file gets every attempt.
    cdn::log::setup("cdn-get", "info", logfile, verbose ? "info" : "warn");
  } catch (const std::exception& e) {
    return usage(e.what());
  }

  spdlog::info("fetching {}{} into {}", opt.start.authority(), opt.start.target, opt.output);
  const auto result = cdn::get::fetch(opt);
  if (result.exit_code == cdn::get::kOk) {
    spdlog::info("{}", result.message);
    // With -o - standard output is the file: the message must not join it.
    if (!quiet) std::fprintf(opt.output == "-" ? stderr : stdout, "%s\n", result.message.c_str());
    return 0;
  }
  spdlog::error("{}", result.message);
  for (const auto& f : result.failures) std::fprintf(stderr, "  %s\n", f.c_str());
  return result.exit_code;
}
