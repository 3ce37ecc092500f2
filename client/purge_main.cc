// SPDX-License-Identifier: MIT
// cdn-purge: purge URLs, path prefixes or tags from the CDN's caches.
//   cdn-purge http://BALANCER:33000/a.css ...      through the balancer
//   cdn-purge -s BALANCER --tag product-42         by tag
//   cdn-purge --replica HOST:PORT --prefix /img/   one replica only
// One PURGE request per URL (all tags go in one request), sent in turn on
// one kept-alive connection per server.
#include <uv.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/url.hpp"
#include "common/admin/allow.hpp"
#include "common/cli/cli.hpp"
#include "common/config/ini.hpp"
#include "common/net/address.hpp"
#include "common/net/client.hpp"
#include "common/purge/purge.hpp"

namespace {

constexpr int kOk = 0;
constexpr int kUnreachable = 3;
constexpr int kRefused = 4;
constexpr int kOwed = 5;
constexpr int kFailed = 6;

constexpr const char* kFooter =
    "Exit codes:\n"
    "  0  purged: every replica acknowledged\n"
    "  2  command-line error (or an unreadable --token-file)\n"
    "  3  the server could not be reached\n"
    "  4  refused: not in [admin] allow (403), no token configured (403), wrong token (401)\n"
    "  5  accepted, but some replicas were unreachable: the balancer sends them the purge\n"
    "     when they return and sends them no client until they applied it (202)\n"
    "  6  any other answer (400: a bad path or tag)\n"
    "\n"
    "With several targets, the exit code is the worst of their outcomes.\n"
    "Targets: a URL http://HOST[:PORT]/path purges on HOST unless -s or --replica names the\n"
    "server; with -s or --replica a bare /path will do. --tag takes tags, not URLs.";

int usage(const std::string& message) {
  (void)std::fprintf(stderr, "cdn-purge: %s (see cdn-purge --help)\n", message.c_str());
  return cdn::cli::kUsage;
}

struct Job {
  cdn::get::Url server;  // where the PURGE goes (host, port)
  std::string target;    // request-target
  std::string host;      // Host: the URL's (the site, once there are several), else the server's
  std::string headers;   // extra lines
  std::string what;      // for messages
};

struct Outcome {
  int code = kOk;
  std::string line;
};

// The line printed for an answer, and its exit code.
Outcome judge(const Job& job, const cdn::net::ClientResult& r, int status,
              const std::string& body) {
  if (!r.ok()) return {kUnreachable, job.what + ": " + job.server.authority() + ": " + r.message};
  std::string text = body;
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  if (status == 401 || status == 403) {
    return {kRefused, job.what + ": refused (" + std::to_string(status) + "): " + text};
  }
  if (status != 200 && status != 202) {
    return {kFailed, job.what + ": " + std::to_string(status) + ": " + text};
  }
  const auto doc = nlohmann::json::parse(body, nullptr, false);
  if (!doc.is_object()) return {kFailed, job.what + ": an answer that is not JSON"};
  if (doc.contains("replicas")) {  // the balancer's
    std::string line = job.what + ": " + std::to_string(doc.value("acknowledged", 0)) + " of " +
                       std::to_string(doc["replicas"].size()) + " replicas acknowledged";
    for (const auto& x : doc["replicas"]) {
      if (!x.value("acknowledged", false)) {
        line += "\n  " + x.value("replica", std::string("?")) + ": owes it (" +
                x.value("error", std::string()) + ")";
      }
    }
    return {status == 200 ? kOk : kOwed, line};
  }
  return {kOk, job.what + ": " + std::to_string(doc.value("purged", 0)) + " objects" +
                   (doc.value("cached", true) ? "" : " (local content: nothing cached)")};
}

bool parse_server(const std::string& text, cdn::get::Url& out, std::string& error) {
  return cdn::get::parse_url(text.starts_with("http://") ? text : "http://" + text, out, error);
}

}  // namespace

static int run_main(int argc, char** argv) {
  CLI::App app{"cdn-purge: purge URLs, prefixes or tags from the CDN's caches"};
  cdn::cli::setup(app, "cdn-purge", kFooter);
  std::vector<std::string> targets;
  std::string balancer, replica, token_file, timeout = "10s";
  bool prefix = false, tag = false, soft = false, quiet = false;
  app.add_option("target", targets, "URLs (or /paths with -s/--replica), or tags with --tag")
      ->required();
  auto* s_opt =
      app.add_option("-s,--server", balancer, "the balancer, HOST[:PORT] (default port 33000)");
  app.add_option("--replica", replica, "one replica only, HOST:PORT")->excludes(s_opt);
  app.add_option("--token-file", token_file, "file whose first line is the purge token")
      ->default_str("none: no Authorization");
  app.add_flag("--prefix", prefix, "purge every URL whose path starts with each target");
  app.add_flag("--tag", tag, "purge every object with one of these tags")->excludes("--prefix");
  app.add_flag("--soft", soft, "mark stale (revalidated on the next request) instead of removing");
  app.add_option("--timeout", timeout, "give up on a server silent for this long")
      ->default_str(timeout);
  app.add_flag("-q,--quiet", quiet, "print only failures");
  if (auto rc = cdn::cli::parse(app, argc, argv)) return *rc;

  const auto t = cdn::config::parse_duration(timeout);
  if (!t || t->count() == 0) return usage("--timeout '" + timeout + "' is not a positive duration");
  std::string token;
  if (!token_file.empty()) {
    std::ifstream in(token_file);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) return usage("--token-file " + token_file + ": cannot read it");
    token = cdn::admin::token_from_text(text.str());
    if (token.empty()) return usage("--token-file " + token_file + ": holds no token");
  }
  std::optional<cdn::get::Url> server;
  std::string err;
  if (!balancer.empty() || !replica.empty()) {
    cdn::get::Url u;
    if (!balancer.empty()) {
      const bool has_port = balancer.find(':') != std::string::npos && balancer.front() != '[';
      if (!parse_server(has_port ? balancer : balancer + ":33000", u, err)) return usage(err);
    } else if (!parse_server(replica, u, err)) {
      return usage(err);
    }
    server = u;
  }
  if (tag && !server) return usage("--tag needs -s BALANCER or --replica HOST:PORT");

  std::string extra;
  if (soft) extra.append(cdn::purge::kSoftHeader).append(": 1\r\n");
  if (!token.empty()) extra.append("Authorization: Bearer ").append(token).append("\r\n");
  std::vector<Job> jobs;
  if (tag) {
    std::vector<std::string> all;
    for (const auto& t : targets) {
      for (auto& one : cdn::purge::split_tags(t)) all.push_back(std::move(one));
    }
    if (all.empty()) return usage("no tag given");
    std::string line = std::string(cdn::purge::kTagHeader) + ":";
    std::string what = "tag";
    for (const auto& x : all) {
      if (x.size() > cdn::purge::kMaxTagBytes) return usage("a tag longer than 256 bytes");
      line += " " + x;
      what += " " + x;
    }
    jobs.push_back({*server, "/", "", extra + line + "\r\n", what});
  } else {
    for (const auto& t : targets) {
      Job j;
      std::string path;
      if (t.starts_with("http://")) {
        cdn::get::Url u;
        if (!cdn::get::parse_url(t, u, err)) return usage(err);
        j.server = server ? *server : u;
        j.host = u.authority();
        path = u.target;
      } else if (t.starts_with("/") && server) {
        j.server = *server;
        path = t;
      } else {
        return usage("'" + t + "' is not a URL (http://HOST/path) or, with -s/--replica, a /path");
      }
      if (prefix && !path.ends_with('*')) path += "*";
      j.target = path;
      j.headers = extra;
      j.what = (prefix ? "prefix " : "") + path;
      if (soft) j.what += " (soft)";
      jobs.push_back(std::move(j));
    }
  }

  uv_loop_t loop;
  uv_loop_init(&loop);
  std::map<std::string, cdn::net::ClientConnection::Ptr> conns;
  int worst = kOk;
  size_t next = 0;
  std::function<void()> run = [&] {
    if (next == jobs.size()) {
      // The kept-alive connections would keep the loop running: stop it,
      // then close them outside any of their callbacks.
      uv_stop(&loop);
      return;
    }
    const Job& job = jobs[next++];
    const std::string key = job.server.authority();
    auto& conn = conns[key];
    if (!conn) {
      auto address = cdn::net::resolve(job.server.host, job.server.port, &err);
      if (!address) {
        (void)std::fprintf(stderr, "cdn-purge: %s: %s: %s\n", job.what.c_str(), key.c_str(),
                           err.c_str());
        worst = std::max(worst, kUnreachable);
        run();
        return;
      }
      conn = cdn::net::ClientConnection::create(&loop, *address);
    }
    auto body = std::make_shared<std::string>();
    conn->request("PURGE", job.target, key, job.headers, *t,
                  {.on_headers = nullptr,
                   .on_body =
                       [body](std::string_view piece) {
                         if (body->size() < (1u << 20)) body->append(piece);
                         return true;
                       },
                   .on_done =
                       [&, body](const cdn::net::ClientResult& r, const cdn::http::Response& resp) {
                         const Outcome o = judge(job, r, resp.status, *body);
                         worst = std::max(worst, o.code);
                         if (o.code != kOk) {
                           (void)std::fprintf(stderr, "cdn-purge: %s\n", o.line.c_str());
                         } else if (!quiet) {
                           std::printf("%s\n", o.line.c_str());
                         }
                         run();
                       }});
  };
  run();
  uv_run(&loop, UV_RUN_DEFAULT);
  conns.clear();
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return worst;
}

// What the body did not catch ends the process with a message and exit code
// 1, not std::terminate (bugprone-exception-escape).
int main(int argc, char** argv) {
  try {
    return run_main(argc, argv);
  } catch (const std::exception& e) {
    (void)std::fprintf(stderr, "cdn-purge: %s\n", e.what());
  } catch (...) {
    (void)std::fprintf(stderr, "cdn-purge: unknown exception\n");
  }
  return 1;
}
