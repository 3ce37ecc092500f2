// SPDX-License-Identifier: MIT
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/config/ini.hpp"
#include "common/config/settings.hpp"

namespace cdn::config {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

// gmock is not linked: a small substring assertion instead of HasSubstr.
::testing::AssertionResult Contains(const std::string& haystack, const std::string& needle) {
  if (haystack.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "'" << haystack << "' does not contain '" << needle << "'";
}

// The message of the Error that f throws; fails the test when it throws none.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no config::Error thrown";
  return {};
}

// The repository root, found from this file's name: __FILE__ is relative to
// the build directory under meson, so try it against the current directory and
// against the build directory (two levels above this test executable).
fs::path source_root() {
  if (const char* env = std::getenv("CDN_SOURCE_ROOT"); env != nullptr && *env != '\0') {
    return env;
  }
  const fs::path self = fs::path(__FILE__).parent_path().parent_path().parent_path();
  std::vector<fs::path> candidates;
  if (self.is_absolute()) {
    candidates.push_back(self);
  } else {
    candidates.push_back(fs::current_path() / self);
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) candidates.push_back(exe.parent_path().parent_path().parent_path() / self);
  }
  for (const auto& c : candidates) {
    if (fs::exists(c / "etc/cdn/replicad.ini")) return fs::weakly_canonical(c);
  }
  return {};
}

// A fresh directory, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "cdn-config-test-XXXXXX").string();
    if (mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  std::string write(const std::string& name, const std::string& text) const {
    const fs::path p = path_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p.string();
  }

 private:
  fs::path path_;
};

// ---------------------------------------------------------------- durations

TEST(Duration, Units) {
  EXPECT_EQ(parse_duration("500ms"), milliseconds(500));
  EXPECT_EQ(parse_duration("2s"), milliseconds(2000));
  EXPECT_EQ(parse_duration("1m"), milliseconds(60'000));
  EXPECT_EQ(parse_duration("1h"), milliseconds(3'600'000));
  EXPECT_EQ(parse_duration("0"), milliseconds(0));
  EXPECT_EQ(parse_duration("0ms"), milliseconds(0));
}

TEST(Duration, Days) {
  EXPECT_EQ(parse_duration("1d"), milliseconds(86'400'000));
  EXPECT_EQ(parse_duration("1.5D"), milliseconds(129'600'000));
  EXPECT_EQ(parse_duration("365d"), parse_duration("8760h"));
}

TEST(Duration, BareNumberIsSeconds) {
  EXPECT_EQ(parse_duration("5"), milliseconds(5000));
  EXPECT_EQ(parse_duration("007"), milliseconds(7000));
}

TEST(Duration, Decimals) {
  EXPECT_EQ(parse_duration("1.5s"), milliseconds(1500));
  EXPECT_EQ(parse_duration("0.25"), milliseconds(250));
  EXPECT_EQ(parse_duration(".5s"), milliseconds(500));
  EXPECT_EQ(parse_duration("1.5m"), milliseconds(90'000));
  EXPECT_EQ(parse_duration("0.001s"), milliseconds(1));
  EXPECT_EQ(parse_duration("2.5ms"), milliseconds(3));  // rounded to the nearest ms
  EXPECT_EQ(parse_duration("1.0000000000000000000001s"), milliseconds(1000));
}

TEST(Duration, WhitespaceAndCase) {
  EXPECT_EQ(parse_duration("  2s "), milliseconds(2000));
  EXPECT_EQ(parse_duration("2 s"), milliseconds(2000));
  EXPECT_EQ(parse_duration("300MS"), milliseconds(300));
}

TEST(Duration, Rejects) {
  for (const char* bad : {"",    " ",     "-1s",    "-0",        "+1s",  "s",  "ms",  "1.",
                          ".",   "1..5s", "1.5.2s", "5 parsecs", "1sec", "1w", "1s1", "1s junk",
                          "1e3", "0x10",  "1,5s",   "1m30s",     "∞",    "nan"}) {
    EXPECT_EQ(parse_duration(bad), std::nullopt) << "'" << bad << "'";
  }
}

TEST(Duration, Overflow) {
  EXPECT_EQ(parse_duration("99999999999999999999999"), std::nullopt);
  EXPECT_EQ(parse_duration("18446744073709551615s"), std::nullopt);
  EXPECT_EQ(parse_duration("9223372036854775807h"), std::nullopt);
  EXPECT_EQ(parse_duration("2562047788015h"), std::nullopt);  // > int64 ms / 2
  EXPECT_TRUE(parse_duration("1000000h").has_value());
}

// ---------------------------------------------------------------- sizes

TEST(Size, Units) {
  EXPECT_EQ(parse_size("0"), 0U);
  EXPECT_EQ(parse_size("512"), 512U);
  EXPECT_EQ(parse_size("512B"), 512U);
  EXPECT_EQ(parse_size("64K"), 64U * 1024);
  EXPECT_EQ(parse_size("64k"), 64U * 1024);
  EXPECT_EQ(parse_size("1M"), 1024U * 1024);
  EXPECT_EQ(parse_size("2G"), 2ULL << 30);
  EXPECT_EQ(parse_size("3T"), 3ULL << 40);
  EXPECT_EQ(parse_size("8 K"), 8U * 1024);
}

TEST(Size, LongSpellingsArePowersOf1024) {
  EXPECT_EQ(parse_size("1KiB"), 1024U);
  EXPECT_EQ(parse_size("1KB"), 1024U);
  EXPECT_EQ(parse_size("1kb"), 1024U);
  EXPECT_EQ(parse_size("1MiB"), 1U << 20);
  EXPECT_EQ(parse_size("1MB"), 1U << 20);
  EXPECT_EQ(parse_size("1GiB"), 1ULL << 30);
  EXPECT_EQ(parse_size("1TB"), 1ULL << 40);
}

TEST(Size, Rejects) {
  for (const char* bad : {"", "K", "-1", "+1", "1.5M", "1X", "1KK", "1Kib2", "1 K B", "1iB", "1P",
                          "0x10", "1KBB", "12abc"}) {
    EXPECT_EQ(parse_size(bad), std::nullopt) << "'" << bad << "'";
  }
}

TEST(Size, Overflow) {
  EXPECT_EQ(parse_size("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(parse_size("18446744073709551616"), std::nullopt);
  EXPECT_EQ(parse_size("16777216T"), std::nullopt);  // 2^24 * 2^40 = 2^64
  EXPECT_EQ(parse_size("16777215T"), 16777215ULL << 40);
  EXPECT_EQ(parse_size("17179869184G"), std::nullopt);
}

// ---------------------------------------------------------------- bools

TEST(Bool, Spellings) {
  for (const char* t : {"yes", "true", "on", "1", "YES", "True", " on "}) {
    EXPECT_EQ(parse_bool(t), true) << t;
  }
  for (const char* f : {"no", "false", "off", "0", "NO", "False"}) {
    EXPECT_EQ(parse_bool(f), false) << f;
  }
  for (const char* bad : {"", "y", "n", "2", "yes please", "enabled"}) {
    EXPECT_EQ(parse_bool(bad), std::nullopt) << bad;
  }
}

// ---------------------------------------------------------------- host:port

TEST(HostPort, Forms) {
  EXPECT_EQ(parse_host_port("example.com", 33000), (HostPort{"example.com", 33000}));
  EXPECT_EQ(parse_host_port("example.com:8080", 33000), (HostPort{"example.com", 8080}));
  EXPECT_EQ(parse_host_port("10.0.0.1:1", 33000), (HostPort{"10.0.0.1", 1}));
  EXPECT_EQ(parse_host_port("10.0.0.1:65535", 33000), (HostPort{"10.0.0.1", 65535}));
  EXPECT_EQ(parse_host_port("[::1]:80", 33000), (HostPort{"::1", 80}));
  EXPECT_EQ(parse_host_port("[2001:db8::1]", 33000), (HostPort{"2001:db8::1", 33000}));
  EXPECT_EQ(parse_host_port("  my_host-1.local:9 ", 33000), (HostPort{"my_host-1.local", 9}));
}

TEST(HostPort, Rejects) {
  for (const char* bad : {"",
                          ":80",
                          "host:",
                          "host:0",
                          "host:65536",
                          "host:99999999",
                          "host:-1",
                          "host:+80",
                          "host:8o",
                          "host:80:81",
                          "::1",
                          "2001:db8::1",
                          "::1:80",
                          "[::1",
                          "[::1]80",
                          "[::1]:",
                          "[zz]:80",
                          "[]:80",
                          "[127.0.0.1]:80",
                          "http://host",
                          "host/path",
                          "user@host",
                          "a b",
                          ".host",
                          "-host",
                          "host: 80"}) {
    EXPECT_EQ(parse_host_port(bad, 33000), std::nullopt) << "'" << bad << "'";
  }
}

TEST(HostPort, Str) {
  EXPECT_EQ((HostPort{"example.com", 80}).str(), "example.com:80");
  EXPECT_EQ((HostPort{"::1", 33000}).str(), "[::1]:33000");
  // str() round-trips through parse_host_port.
  for (const char* s : {"a.b:1", "[fe80::1]:443", "127.0.0.1:33000"}) {
    const auto hp = parse_host_port(s, 1);
    ASSERT_TRUE(hp) << s;
    EXPECT_EQ(hp->str(), s);
  }
}

// ---------------------------------------------------------------- INI syntax

TEST(Ini, EntriesInOrderWithLinesAndRepeats) {
  const IniFile f = parse_ini(
      "; comment\n"
      "# another\n"
      "[replicas]\n"
      "replica = a:1\n"
      "\n"
      "replica=b:2\n"
      "  replica = c:3 ; inline comment\n"
      "[probe]\n"
      "interval : 2s\n",
      "t.ini");
  ASSERT_EQ(f.entries.size(), 4U);
  EXPECT_EQ(f.path, "t.ini");
  EXPECT_EQ(f.entries[0].section, "replicas");
  EXPECT_EQ(f.entries[0].key, "replica");
  EXPECT_EQ(f.entries[0].value, "a:1");
  EXPECT_EQ(f.entries[0].line, 4);
  EXPECT_EQ(f.entries[1].value, "b:2");
  EXPECT_EQ(f.entries[1].line, 6);
  EXPECT_EQ(f.entries[2].value, "c:3");  // indented: an ordinary line, not a continuation
  EXPECT_EQ(f.entries[2].line, 7);
  EXPECT_EQ(f.entries[3].section, "probe");
  EXPECT_EQ(f.entries[3].key, "interval");
  EXPECT_EQ(f.entries[3].value, "2s");
  EXPECT_EQ(f.entries[3].line, 9);
  ASSERT_EQ(f.sections.size(), 2U);
  EXPECT_EQ(f.sections[0].name, "replicas");
  EXPECT_EQ(f.sections[0].line, 3);
  EXPECT_EQ(f.sections[1].line, 8);
}

// '#' and ';' follow one rule: at the start of a line or after a blank they
// start a comment; elsewhere they are part of the value.
TEST(Ini, InlineCommentsOneRuleForHashAndSemicolon) {
  const IniFile f = parse_ini(
      "[a] # heading comment\n"
      "k1 = v1 # hash\n"
      "k2 = v2 ; semicolon\n"
      "k3 = v3\t#tab before\n"
      "k4 = http://h/p#frag\n"
      "k5 = a;b\n"
      "k6 = # only a comment\n"
      "[b] ; another\n",
      "t.ini");
  ASSERT_EQ(f.entries.size(), 6U);
  EXPECT_EQ(f.entries[0].value, "v1");
  EXPECT_EQ(f.entries[1].value, "v2");
  EXPECT_EQ(f.entries[2].value, "v3");
  EXPECT_EQ(f.entries[3].value, "http://h/p#frag");
  EXPECT_EQ(f.entries[4].value, "a;b");
  EXPECT_EQ(f.entries[5].value, "");
  ASSERT_EQ(f.sections.size(), 2U);
  EXPECT_EQ(f.sections[1].name, "b");
}

TEST(Ini, InlineCommentAfterANumber) {
  EXPECT_EQ(balancer_settings(
                parse_ini("[server]\nport = 8080 # web\n[replicas]\nreplica = a:1 ; x\n", "t.ini"))
                .server.port,
            8080);
}

TEST(Ini, CrLfAndBomAndNoFinalNewline) {
  const IniFile f = parse_ini("\xEF\xBB\xBF[a]\r\nk = v\r\nj = w", "t.ini");
  ASSERT_EQ(f.entries.size(), 2U);
  EXPECT_EQ(f.entries[0].section, "a");
  EXPECT_EQ(f.entries[0].value, "v");
  EXPECT_EQ(f.entries[1].value, "w");
  EXPECT_EQ(f.entries[1].line, 3);
}

TEST(Ini, EmptyInputAndEmptyValue) {
  EXPECT_TRUE(parse_ini("", "t.ini").entries.empty());
  const IniFile f = parse_ini("[a]\nk =\n", "t.ini");
  ASSERT_EQ(f.entries.size(), 1U);
  EXPECT_EQ(f.entries[0].value, "");
}

TEST(Ini, SyntaxErrorsNameTheLine) {
  auto msg = error_of([] { parse_ini("[a]\nk = v\njust words\n", "/etc/cdn/x.ini"); });
  EXPECT_TRUE(Contains(msg, "/etc/cdn/x.ini:3: syntax error"));
  EXPECT_TRUE(Contains(msg, "just words"));

  msg = error_of([] { parse_ini("[a]\n\n[broken\nk = v\n", "x.ini"); });
  EXPECT_TRUE(Contains(msg, "x.ini:3: syntax error"));
  EXPECT_TRUE(Contains(msg, "']'"));

  msg = error_of([] { parse_ini("[a]\n= v\n", "x.ini"); });
  EXPECT_TRUE(Contains(msg, "x.ini:2: syntax error"));

  msg = error_of([] { parse_ini("[a] junk\n", "x.ini"); });
  EXPECT_TRUE(Contains(msg, "x.ini:1: syntax error"));
}

TEST(Ini, FirstErrorWins) {
  const auto msg = error_of([] { parse_ini("[a]\nbad one\n= v\nbad two\n", "x.ini"); });
  EXPECT_TRUE(Contains(msg, "x.ini:2:"));
}

TEST(Ini, LongLineIsAnErrorNotASplit) {
  const std::string ok = "[a]\nk = " + std::string(kMaxLineLength - 4, 'x') + "\n";
  EXPECT_EQ(parse_ini(ok, "x.ini").entries.at(0).value.size(), kMaxLineLength - 4);
  const std::string bad = "[a]\nk = " + std::string(kMaxLineLength, 'x') + "\nj = 1\n";
  const auto msg = error_of([&] { parse_ini(bad, "x.ini"); });
  EXPECT_TRUE(Contains(msg, "x.ini:2: line is longer than"));
}

TEST(Ini, NulByte) {
  const auto msg = error_of([] { parse_ini(std::string("[a]\nk = v\0w\n", 12), "x.ini"); });
  EXPECT_TRUE(Contains(msg, "x.ini:2: contains a NUL byte"));
}

TEST(Ini, LongSectionNameKeptWhole) {
  const std::string name(80, 's');
  const IniFile f = parse_ini("[" + name + "]\nk = v\n", "x.ini");
  EXPECT_EQ(f.entries.at(0).section, name);
}

TEST(Ini, LoadMissingFile) {
  const auto msg = error_of([] { load_ini("/nonexistent/dir/x.ini"); });
  EXPECT_TRUE(Contains(msg, "/nonexistent/dir/x.ini: cannot read"));
}

TEST(Ini, LoadFile) {
  TempDir dir;
  const auto path = dir.write("a.ini", "[server]\nport = 1\n");
  const IniFile f = load_ini(path);
  EXPECT_EQ(f.path, path);
  ASSERT_EQ(f.entries.size(), 1U);
  EXPECT_EQ(f.entries[0].value, "1");
}

TEST(Ini, Where) {
  const IniFile f{"/etc/cdn/balancerd.ini", {}, {}};
  const Entry e{"probe", "interval", "5 parsecs", 12};
  EXPECT_EQ(where(f, e, "bad"), "/etc/cdn/balancerd.ini:12: [probe] interval: bad");
}

// ---------------------------------------------------------------- replicad settings

ReplicaSettings replica(const std::string& text, const std::string& path = "/etc/cdn/r.ini") {
  return replica_settings(parse_ini(text, path));
}

BalancerSettings balancer(const std::string& text, const std::string& path = "/etc/cdn/b.ini") {
  return balancer_settings(parse_ini(text, path));
}

TEST(Replica, Defaults) {
  const ReplicaSettings r = replica("");
  const ReplicaSettings d;
  EXPECT_EQ(r.server.port, 33000);
  EXPECT_EQ(r.server.address, "0.0.0.0");
  EXPECT_EQ(r.server.idle_timeout, d.server.idle_timeout);
  EXPECT_EQ(r.log.level, "info");
  EXPECT_EQ(r.content.index, "index.html");
}

TEST(Replica, EveryKey) {
  const ReplicaSettings r = replica(
      "[server]\n"
      "address = ::\n"
      "port = 8080\n"
      "name = edge-1\n"
      "max_connections = 50\n"
      "idle_timeout = 5s\n"
      "header_timeout = 1500ms\n"
      "send_timeout = 1m\n"
      "drain_timeout = 0.5\n"
      "max_request_line = 4K\n"
      "max_header_bytes = 1MiB\n"
      "max_headers = 20\n"
      "workers = 3\n"
      "[log]\n"
      "level = DEBUG\n"
      "file = /var/log/cdn.log\n"
      "[content]\n"
      "root = /srv/site\n"
      "index = home.htm\n"
      "max_age = 0\n"
      "capacity = 7\n");
  EXPECT_EQ(r.server.address, "::");
  EXPECT_EQ(r.server.port, 8080);
  EXPECT_EQ(r.server.name, "edge-1");
  EXPECT_EQ(r.server.max_connections, 50U);
  EXPECT_EQ(r.server.idle_timeout, milliseconds(5000));
  EXPECT_EQ(r.server.header_timeout, milliseconds(1500));
  EXPECT_EQ(r.server.send_timeout, milliseconds(60'000));
  EXPECT_EQ(r.server.drain_timeout, milliseconds(500));
  EXPECT_EQ(r.server.max_request_line, 4096U);
  EXPECT_EQ(r.server.max_header_bytes, 1U << 20);
  EXPECT_EQ(r.server.max_headers, 20U);
  EXPECT_EQ(r.server.workers, 3U);
  EXPECT_EQ(r.log.level, "debug");
  EXPECT_EQ(r.log.file, "/var/log/cdn.log");
  EXPECT_EQ(r.content.root, "/srv/site");
  EXPECT_EQ(r.content.index, "home.htm");
  EXPECT_EQ(r.content.max_age, milliseconds(0));
  EXPECT_EQ(r.content.capacity, 7U);
  EXPECT_NO_THROW(validate(r, "r.ini"));
}

TEST(Replica, PortZeroMeansAnyFreePort) {
  EXPECT_EQ(replica("[server]\nport = 0\n").server.port, 0);
  const auto msg = error_of([] { replica("[server]\nport = 65536\n"); });
  EXPECT_TRUE(Contains(msg, "/etc/cdn/r.ini:2: [server] port: '65536'"));
}

TEST(Replica, BadDurationMessage) {
  const auto msg = error_of([] { replica("[server]\n\nidle_timeout = 5 parsecs\n"); });
  EXPECT_EQ(msg,
            "/etc/cdn/r.ini:3: [server] idle_timeout: '5 parsecs' is not a duration "
            "(use 500ms, 2s, 1m; allowed: 100ms to 1h)");
}

TEST(Replica, UnknownKeyNamesFileLineAndKey) {
  const auto msg = error_of([] { replica("[server]\nport = 1\nprot = 2\n"); });
  EXPECT_TRUE(Contains(msg, "/etc/cdn/r.ini:3: [server] prot: unknown key"));
}

TEST(Replica, UnknownSectionNamesFileLine) {
  auto msg = error_of([] { replica("[server]\nport = 1\n\n[servre]\nport = 2\n"); });
  EXPECT_TRUE(Contains(msg, "/etc/cdn/r.ini:4: [servre]: unknown section"));
  // An empty unknown section is reported too.
  msg = error_of([] { replica("[server]\n[probe]\n"); });
  EXPECT_TRUE(Contains(msg, "/etc/cdn/r.ini:2: [probe]: unknown section"));
}

TEST(Replica, KeyOutsideSection) {
  const auto msg = error_of([] { replica("port = 1\n"); });
  EXPECT_TRUE(Contains(msg, "/etc/cdn/r.ini:1: port: key outside any section"));
}

TEST(Replica, KeySetTwice) {
  const auto msg = error_of([] { replica("[server]\nport = 1\n[server]\nport = 2\n"); });
  EXPECT_TRUE(Contains(msg, "/etc/cdn/r.ini:4: [server] port: set twice (first at line 2)"));
}

TEST(Replica, BadValues) {
  struct Case {
    const char* text;
    const char* expect;
  };
  for (const Case& c : {
           Case{"[server]\naddress = localhost\n", ":2: [server] address: 'localhost'"},
           Case{"[server]\nmax_connections = 0\n", ":2: [server] max_connections: '0'"},
           Case{"[server]\nmax_connections = -5\n", ":2: [server] max_connections"},
           Case{"[server]\nmax_headers = lots\n", ":2: [server] max_headers: 'lots'"},
           Case{"[server]\nmax_request_line = 1Q\n",
                ":2: [server] max_request_line: '1Q' is not a size"},
           Case{"[server]\nmax_header_bytes = 1T\n",
                ":2: [server] max_header_bytes: '1T' is out of range"},
           Case{"[log]\nlevel = loud\n", ":2: [log] level: 'loud' is not a log level"},
           Case{"[tls]\nktls = on\n",
                ":2: [tls] ktls: 'on' is not a kTLS mode (use one of auto, off)"},
           Case{"[content]\nindex = a/b\n", ":2: [content] index: 'a/b'"},
           Case{"[content]\ncapacity = 0\n", ":2: [content] capacity: '0'"},
           Case{"[content]\norigin = ftp://x/\n",
                ":2: [content] origin: 'ftp://x/' is not an origin"},
           Case{"[content]\nmax_age = soon\n", ":2: [content] max_age: 'soon' is not a duration"},
       }) {
    const auto msg = error_of([&] { replica(c.text); });
    EXPECT_TRUE(Contains(msg, std::string("/etc/cdn/r.ini") + c.expect)) << c.text;
  }
}

TEST(Replica, OriginNormalised) {
  EXPECT_EQ(replica("[content]\norigin = example.com\n").content.origin, "http://example.com/");
  EXPECT_EQ(replica("[content]\norigin = https://example.com/a/b\n").content.origin,
            "https://example.com/a/b");
}

TEST(NormalizeOrigin, Forms) {
  EXPECT_EQ(normalize_origin("example.com"), "http://example.com/");
  EXPECT_EQ(normalize_origin("example.com:8080"), "http://example.com:8080/");
  EXPECT_EQ(normalize_origin("example.com/site/"), "http://example.com/site/");
  EXPECT_EQ(normalize_origin("10.0.0.1"), "http://10.0.0.1/");
  EXPECT_EQ(normalize_origin("[::1]:8080"), "http://[::1]:8080/");
  EXPECT_EQ(normalize_origin("http://example.com"), "http://example.com/");
  EXPECT_EQ(normalize_origin("HTTPS://example.com/x"), "https://example.com/x");
  EXPECT_EQ(normalize_origin("http://example.com/a%20b/"), "http://example.com/a%20b/");
  EXPECT_EQ(normalize_origin("  http://a.b/  "), "http://a.b/");
  for (const char* bad : {"", "ftp://x/", "http://", "http:///x", "://x", "http://user@x/",
                          "http://a b/", "a b", "http://x/a b", "http://x:0/", "::1"}) {
    EXPECT_THROW(normalize_origin(bad), Error) << "'" << bad << "'";
  }
}

TEST(Replica, ValidateExactlyOneSource) {
  auto msg = error_of([] { validate(replica(""), "/etc/cdn/r.ini"); });
  EXPECT_TRUE(Contains(msg, "/etc/cdn/r.ini: [content]: set exactly one of root, page or origin"));
  EXPECT_TRUE(Contains(msg, "none is set"));

  msg = error_of([] { validate(replica("[content]\nroot = /a\norigin = b\n"), "r.ini"); });
  EXPECT_TRUE(Contains(msg, "both root and origin are set"));

  msg = error_of([] { validate(replica("[content]\nroot=/a\npage=/b\norigin=c\n"), "r.ini"); });
  EXPECT_TRUE(Contains(msg, "root, page and origin are all set"));

  EXPECT_NO_THROW(validate(replica("[content]\npage = /srv/index.html\n"), "r.ini"));
  EXPECT_NO_THROW(validate(replica("[content]\norigin = example.com\n"), "r.ini"));
}

TEST(Replica, ValidateAfterOverrides) {
  ReplicaSettings r = replica("[content]\nroot = /srv\n");
  r.content.root.clear();
  r.content.origin = "example.com";  // not normalised: main must call normalize_origin
  auto msg = error_of([&] { validate(r, "r.ini"); });
  EXPECT_TRUE(Contains(msg, "r.ini: [content] origin: 'example.com' must start with http://"));
  r.content.origin = normalize_origin("example.com");
  EXPECT_NO_THROW(validate(r, "r.ini"));

  r.server.idle_timeout = milliseconds(0);
  msg = error_of([&] { validate(r, "r.ini"); });
  EXPECT_TRUE(
      Contains(msg, "r.ini: [server] idle_timeout: 0 is out of range (allowed: 100ms to 1h)"));

  r.server.idle_timeout = milliseconds(1000);
  r.log.level = "chatty";
  msg = error_of([&] { validate(r, "r.ini"); });
  EXPECT_TRUE(Contains(msg, "[log] level: 'chatty'"));
}

TEST(Replica, ZeroTimeoutIsRefusedWithItsLine) {
  const auto msg = error_of([] { replica("[server]\nsend_timeout = 0\n[content]\nroot = /x\n"); });
  EXPECT_EQ(msg,
            "/etc/cdn/r.ini:2: [server] send_timeout: '0' is out of range (allowed: 100ms to 1h)");
}

// ---------------------------------------------------------------- balancerd settings

TEST(Balancer, Defaults) {
  const BalancerSettings b = balancer("[replicas]\nreplica = a\n");
  EXPECT_EQ(b.probe.interval, milliseconds(1000));
  EXPECT_EQ(b.probe.timeout, milliseconds(500));
  EXPECT_EQ(b.balance.policy, BalancePolicy::P2C);
  EXPECT_DOUBLE_EQ(b.balance.hash_load_factor, 1.25);
  ASSERT_EQ(b.replicas.size(), 1U);
  EXPECT_EQ(b.replicas[0].address, (HostPort{"a", 33000}));
  EXPECT_NO_THROW(validate(b, "b.ini"));
}

TEST(Balancer, EveryKey) {
  const BalancerSettings b = balancer(
      "[server]\nport = 4000\naddress = 127.0.0.1\n"
      "[log]\nlevel = warn\n"
      "[replicas]\nreplica = r1\nreplica = r2:5000\nreplica = [::1]:6000\n"
      "[probe]\ninterval = 2s\ntimeout = 300ms\nrise = 3\nfall = 4\nstream = 0\n"
      "[balance]\npolicy = consistent\nfallbacks = 0\nretry_after = 1m\nhash_load_factor = 1.5\n");
  EXPECT_EQ(b.server.port, 4000);
  EXPECT_EQ(b.log.level, "warn");
  ASSERT_EQ(b.replicas.size(), 3U);
  EXPECT_EQ(b.replicas[0].address, (HostPort{"r1", 4000}));  // [server] port is the default
  EXPECT_EQ(b.replicas[1].address, (HostPort{"r2", 5000}));
  EXPECT_EQ(b.replicas[2].address, (HostPort{"::1", 6000}));
  EXPECT_EQ(b.probe.interval, milliseconds(2000));
  EXPECT_EQ(b.probe.timeout, milliseconds(300));
  EXPECT_EQ(b.probe.rise, 3U);
  EXPECT_EQ(b.probe.fall, 4U);
  EXPECT_EQ(b.probe.stream, 0U);
  EXPECT_EQ(balancer("").probe.stream, 10U);  // the default
  EXPECT_EQ(b.balance.policy, BalancePolicy::Consistent);
  EXPECT_EQ(b.balance.fallbacks, 0U);
  EXPECT_EQ(b.balance.retry_after, milliseconds(60'000));
  EXPECT_DOUBLE_EQ(b.balance.hash_load_factor, 1.5);
  EXPECT_NO_THROW(validate(b, "b.ini"));
}

TEST(Balancer, PortAfterReplicasStillDefaults) {
  const BalancerSettings b = balancer("[replicas]\nreplica = r1\n[server]\nport = 4000\n");
  EXPECT_EQ(b.replicas.at(0).address.port, 4000);
}

TEST(Balancer, Policies) {
  for (const char* p : {"best", "round-robin", "least-loaded", "p2c", "consistent"}) {
    EXPECT_EQ(to_string(balancer(std::string("[balance]\npolicy = ") + p + "\n").balance.policy),
              p);
    EXPECT_EQ(to_string(parse_policy(p, "--policy")), p);
  }
  EXPECT_EQ(balancer("[balance]\npolicy = Round-Robin\n").balance.policy,
            BalancePolicy::RoundRobin);
  EXPECT_EQ(parse_policy("P2C", "--policy"), BalancePolicy::P2C);
  const auto msg = error_of([] { balancer("[balance]\npolicy = random\n"); });
  EXPECT_TRUE(Contains(msg,
                       "/etc/cdn/b.ini:2: [balance] policy: 'random' is not a policy (use "
                       "one of best, round-robin, least-loaded, p2c, consistent)"))
      << msg;
  const auto flag = error_of([] { parse_policy("sideways", "--policy"); });
  EXPECT_EQ(flag,
            "--policy: 'sideways' is not a policy (use one of best, round-robin, least-loaded, "
            "p2c, consistent)");
}

TEST(Balancer, BadValues) {
  struct Case {
    const char* text;
    const char* expect;
  };
  for (const Case& c : {
           Case{"[probe]\nrise = 0\n", ":2: [probe] rise: '0'"},
           Case{"[probe]\nfall = 0\n", ":2: [probe] fall: '0'"},
           Case{"[probe]\nstream = 3601\n", ":2: [probe] stream: '3601'"},
           Case{"[probe]\nstream = -1\n", ":2: [probe] stream: '-1'"},
           Case{"[probe]\ninterval = 5 parsecs\n",
                ":2: [probe] interval: '5 parsecs' is not a duration (use 500ms, 2s, 1m; "
                "allowed: 100ms to 1h)"},
           Case{"[balance]\nhash_load_factor = 1.0\n", ":2: [balance] hash_load_factor: '1.0'"},
           Case{"[balance]\nhash_load_factor = abc\n", ":2: [balance] hash_load_factor: 'abc'"},
           Case{"[balance]\nhash_load_factor = inf\n", ":2: [balance] hash_load_factor: 'inf'"},
           Case{"[balance]\nfallbacks = -1\n", ":2: [balance] fallbacks: '-1'"},
           Case{"[replicas]\nreplica = ::1\n", ":2: [replicas] replica: '::1' is not an address"},
           Case{"[replicas]\nreplica = a:0\n", ":2: [replicas] replica: 'a:0'"},
           Case{"[replicas]\nreplicas = a\n", ":2: [replicas] replicas: unknown key"},
           Case{"[content]\nroot = /x\n", ":1: [content]: unknown section"},
       }) {
    const auto msg = error_of([&] { balancer(c.text); });
    EXPECT_TRUE(Contains(msg, std::string("/etc/cdn/b.ini") + c.expect)) << c.text;
  }
}

TEST(Balancer, BareReplicaWithPortZero) {
  const auto msg = error_of([] { balancer("[server]\nport = 0\n[replicas]\nreplica = a\n"); });
  EXPECT_TRUE(Contains(msg, "/etc/cdn/b.ini:4: [replicas] replica: 'a' needs a port"));
  EXPECT_EQ(balancer("[server]\nport = 0\n[replicas]\nreplica = a:1\n").replicas.at(0).address.port,
            1);
}

TEST(Balancer, DuplicateReplicaNamesBoth) {
  const auto msg =
      error_of([] { balancer("[replicas]\nreplica = a:1\nreplica = b:1\nreplica = A:1\n"); });
  EXPECT_TRUE(Contains(msg, "/etc/cdn/b.ini:4: replica A:1 is listed twice"));
  EXPECT_TRUE(Contains(msg, "also at /etc/cdn/b.ini:2"));
  // The same address with and without the default port is the same replica.
  EXPECT_THROW(balancer("[replicas]\nreplica = a\nreplica = a:33000\n"), Error);
}

TEST(Balancer, ServersFileRelativeToIniDirectory) {
  TempDir dir;
  dir.write("conf/servers.txt", "# seed format\n\n  10.0.0.1  \n10.0.0.2:7000 # comment\n");
  const auto ini = dir.write("conf/balancerd.ini",
                             "[server]\nport = 4000\n"
                             "[replicas]\nservers_file = servers.txt\nreplica = r0:1\n");
  const BalancerSettings b = balancer_settings(load_ini(ini));
  EXPECT_EQ(fs::path(b.servers_file), dir.path() / "conf/servers.txt");
  ASSERT_EQ(b.replicas.size(), 3U);
  EXPECT_EQ(b.replicas[0].address, (HostPort{"r0", 1}));  // replica= entries come first
  EXPECT_EQ(b.replicas[1].address, (HostPort{"10.0.0.1", 4000}));
  EXPECT_EQ(b.replicas[2].address, (HostPort{"10.0.0.2", 7000}));
  EXPECT_NO_THROW(validate(b, ini));
}

// Every path key, not only servers_file, is relative to the file's directory.
TEST(Replica, PathsRelativeToIniDirectory) {
  const ReplicaSettings r = replica(
      "[log]\nfile = logs/r.log\n[content]\nroot = site\ncache_dir = ../cache\n"
      "ca_file = ca.pem\n",
      "/etc/cdn/replicad.ini");
  EXPECT_EQ(r.log.file, "/etc/cdn/logs/r.log");
  EXPECT_EQ(r.content.root, "/etc/cdn/site");
  EXPECT_EQ(r.content.cache_dir, "/etc/cache");
  EXPECT_EQ(r.content.ca_file, "/etc/cdn/ca.pem");
  EXPECT_EQ(replica("[content]\npage = p/index.html\n", "/srv/r.ini").content.page,
            "/srv/p/index.html");
  EXPECT_EQ(replica("[content]\nroot = /abs\n", "/srv/r.ini").content.root, "/abs");
}

// --print-config's text reads back to the same settings (every key, and
// values that are not the defaults).
TEST(ToIni, ReplicaRoundTrip) {
  const ReplicaSettings r = replica(
      "[server]\nport = 0\nname = edge 1\nidle_timeout = 1500ms\nmax_header_bytes = 32K\n"
      "[log]\nlevel = debug\n"
      "[content]\norigin = example.com:8080/base\nstale_if_error = 2d\ncache_size = 3G\n",
      "/etc/cdn/r.ini");
  const std::string text = to_ini(r);
  EXPECT_TRUE(Contains(text, "[content]\n"));
  EXPECT_TRUE(Contains(text, "origin = http://example.com:8080/base\n"));
  EXPECT_TRUE(Contains(text, "stale_if_error = 48h\n"));
  EXPECT_TRUE(Contains(text, "cache_size = 3G\n"));
  EXPECT_TRUE(Contains(text, "idle_timeout = 1500ms\n"));
  EXPECT_TRUE(Contains(text, "cache_dir = /var/cache/cdn\n"));  // a default, shown too
  const ReplicaSettings back = replica_settings(parse_ini(text, "/elsewhere/p.ini"));
  EXPECT_EQ(to_ini(back), text);
  EXPECT_EQ(back.server.name, "edge 1");
  EXPECT_EQ(back.content.stale_if_error, r.content.stale_if_error);
  EXPECT_NO_THROW(validate(back, "p.ini"));
}

TEST(ToIni, BalancerRoundTripListsServersFileReplicasOnce) {
  TempDir dir;
  dir.write("servers.txt", "10.0.0.1\n10.0.0.2:7000 weight=3\n");
  const auto ini = dir.write("b.ini",
                             "[server]\nport = 4000\n[replicas]\nservers_file = servers.txt\n"
                             "replica = r0:1\n[balance]\npolicy = consistent\n"
                             "hash_load_factor = 1.3\n[probe]\ninterval = 2s\n");
  const BalancerSettings b = balancer_settings(load_ini(ini));
  const std::string text = to_ini(b);
  EXPECT_TRUE(Contains(text, "# servers_file = "));
  EXPECT_TRUE(Contains(text, "replica = 10.0.0.2:7000 weight=3\n"));
  EXPECT_TRUE(Contains(text, "policy = consistent\n"));
  const BalancerSettings back = balancer_settings(parse_ini(text, "/elsewhere/b.ini"));
  EXPECT_EQ(back.replicas, b.replicas);
  EXPECT_EQ(back.balance.hash_load_factor, 1.3);
  EXPECT_EQ(back.probe.interval, milliseconds(2000));
  EXPECT_TRUE(back.servers_file.empty());
  EXPECT_NO_THROW(validate(back, "b.ini"));
}

TEST(Balancer, ServersFileAbsolute) {
  TempDir dir;
  const auto servers = dir.write("s.txt", "h1:1\n");
  const BalancerSettings b = balancer("[replicas]\nservers_file = " + servers + "\n", "rel.ini");
  EXPECT_EQ(b.servers_file, servers);
  EXPECT_EQ(b.replicas.at(0).address, (HostPort{"h1", 1}));
}

TEST(Balancer, ServersFileProblems) {
  TempDir dir;
  auto msg = error_of([&] {
    balancer("[replicas]\nservers_file = missing.txt\n", (dir.path() / "b.ini").string());
  });
  EXPECT_TRUE(Contains(msg, "b.ini:2: [replicas] servers_file:"));
  EXPECT_TRUE(Contains(msg, "missing.txt: cannot read"));

  const auto servers = dir.write("s.txt", "a:1\n\nnot an address\n");
  msg = error_of([&] { balancer("[replicas]\nservers_file = " + servers + "\n"); });
  EXPECT_EQ(
      msg, servers +
               ":3: 'not an address': 'an' is not an option (use weight=N, host=NAME, tls_port=N)");

  const auto dup = dir.write("d.txt", "a:1\n");
  msg = error_of([&] { balancer("[replicas]\nreplica = a:1\nservers_file = " + dup + "\n"); });
  EXPECT_TRUE(Contains(msg, dup + ":1: replica a:1 is listed twice (also at /etc/cdn/b.ini:2)"));
}

TEST(Balancer, ValidateErrors) {
  BalancerSettings b = balancer("");
  auto msg = error_of([&] { validate(b, "/etc/cdn/b.ini"); });
  EXPECT_EQ(msg, "/etc/cdn/b.ini: no replicas: set [replicas] replica= or servers_file=");

  b = balancer("[replicas]\nreplica = a\n[probe]\ninterval = 1s\ntimeout = 1s\n");
  msg = error_of([&] { validate(b, "b.ini"); });
  EXPECT_TRUE(Contains(msg, "b.ini: [probe] timeout: 1s must be shorter than interval (1s)"));

  b = balancer("[replicas]\nreplica = a\n");
  b.probe.interval = milliseconds(0);
  msg = error_of([&] { validate(b, "b.ini"); });
  EXPECT_TRUE(Contains(msg, "b.ini: [probe] interval: 0 is out of range (allowed: 100ms to 1h)"));

  b = balancer("[replicas]\nreplica = a\n");
  b.balance.retry_after = milliseconds(0);
  EXPECT_TRUE(Contains(error_of([&] { validate(b, "b.ini"); }),
                       "b.ini: [balance] retry_after: 0 is out of range (allowed: 1s to 1h)"));

  b = balancer("[replicas]\nreplica = a\n");
  b.replicas.push_back(b.replicas[0]);  // e.g. a command-line -s list added it again
  EXPECT_TRUE(Contains(error_of([&] { validate(b, "b.ini"); }), "a:33000 is listed twice"));

  b = balancer("[replicas]\nreplica = a\n");
  b.balance.hash_load_factor = 1.0;
  EXPECT_TRUE(Contains(error_of([&] { validate(b, "b.ini"); }), "hash_load_factor"));
}

// ---------------------------------------------------------------- servers.txt

TEST(Servers, SeedFormat) {
  const auto v = parse_servers(
      "# replicas\n"
      "\n"
      "10.0.0.1\n"
      "   10.0.0.2:8000   \r\n"
      "\t# indented comment\n"
      "[::1]:9000\n"
      "host.example # trailing comment\n",
      "servers.txt", 33000);
  ASSERT_EQ(v.size(), 4U);
  EXPECT_EQ(v[0].address, (HostPort{"10.0.0.1", 33000}));  // bare host takes the default port
  EXPECT_EQ(v[1].address, (HostPort{"10.0.0.2", 8000}));
  EXPECT_EQ(v[2].address, (HostPort{"::1", 9000}));
  EXPECT_EQ(v[3].address, (HostPort{"host.example", 33000}));
}

TEST(Servers, EmptyAndErrors) {
  EXPECT_TRUE(parse_servers("", "s", 1).empty());
  EXPECT_TRUE(parse_servers("\n\n# only comments\n", "s", 1).empty());
  EXPECT_EQ(
      error_of([] { parse_servers("a\nb c\n", "/etc/cdn/servers.txt", 1); }),
      "/etc/cdn/servers.txt:2: 'b c': 'c' is not an option (use weight=N, host=NAME, tls_port=N)");
  EXPECT_EQ(error_of([] { parse_servers("\n\nxx:99999\n", "s.txt", 1); }),
            "s.txt:3: 'xx:99999' is not an address (use host, host:port or [v6]:port)");
  EXPECT_TRUE(
      Contains(error_of([] { parse_servers("a\n", "s.txt", 0); }), "s.txt:1: 'a' has no port"));
}

TEST(Servers, Weights) {
  const auto v = parse_servers(
      "10.0.0.1 weight=4\n"
      "10.0.0.2:8000\tWEIGHT=1000  # the most\n"
      "[::1]:9000\n",
      "servers.txt", 33000);
  ASSERT_EQ(v.size(), 3U);
  EXPECT_EQ(v[0], (ReplicaEntry{{"10.0.0.1", 33000}, 4}));
  EXPECT_EQ(v[1], (ReplicaEntry{{"10.0.0.2", 8000}, 1000}));
  EXPECT_EQ(v[2], (ReplicaEntry{{"::1", 9000}, 1}));  // default weight
  for (const char* w : {"0", "1001", "-1", "x", "", "1.5", "4x"}) {
    EXPECT_EQ(error_of([&] { parse_servers(std::string("a weight=") + w, "s.txt", 1); }),
              std::string("s.txt:1: 'a weight=") + w + "': weight '" + w +
                  "' is not a whole number from 1 to 1000")
        << w;
  }
  EXPECT_EQ(error_of([] { parse_servers("\na weight=2 weight=3\n", "s.txt", 1); }),
            "s.txt:2: 'a weight=2 weight=3': weight is given twice");
  EXPECT_EQ(
      error_of([] { parse_servers("a weight 2\n", "s.txt", 1); }),
      "s.txt:1: 'a weight 2': 'weight' is not an option (use weight=N, host=NAME, tls_port=N)");
  EXPECT_EQ(
      error_of([] { parse_servers("a backup=1\n", "s.txt", 1); }),
      "s.txt:1: 'a backup=1': 'backup=1' is not an option (use weight=N, host=NAME, tls_port=N)");
}

TEST(Servers, ReplicaEntry) {
  EXPECT_EQ(parse_replica_entry("  h:5 weight=7 ", 1), (ReplicaEntry{{"h", 5}, 7}));
  EXPECT_EQ(parse_replica_entry("h", 0), (ReplicaEntry{{"h", 0}, 1}));  // caller refuses port 0
  EXPECT_EQ(error_of([] { parse_replica_entry("", 1); }),
            "'' is not an address (use host, host:port or [v6]:port)");
  EXPECT_EQ(error_of([] { parse_replica_entry("h:x weight=2", 1); }),
            "'h:x' is not an address (use host, host:port or [v6]:port)");
}

TEST(Servers, HostAndTlsPort) {
  const auto v = parse_servers(
      "10.0.0.1 host=CDN1.Example.com tls_port=443  # public name\n"
      "10.0.0.2:8000 tls_port=8443 weight=2\n"
      "[::1]:9000\n",
      "servers.txt", 33000);
  ASSERT_EQ(v.size(), 3U);
  EXPECT_EQ(v[0], (ReplicaEntry{{"10.0.0.1", 33000}, 1, "cdn1.example.com", 443}));
  EXPECT_EQ(v[1], (ReplicaEntry{{"10.0.0.2", 8000}, 2, "", 8443}));
  EXPECT_EQ(v[2], (ReplicaEntry{{"::1", 9000}, 1, "", 0}));
  // Read back from what --print-config writes.
  for (const auto& r : v) EXPECT_EQ(parse_replica_entry(replica_entry_text(r), 1), r);
  EXPECT_EQ(replica_entry_text(v[0]), "10.0.0.1:33000 host=cdn1.example.com tls_port=443");
  for (const char* p : {"0", "65536", "-1", "x", "", "443x"}) {
    EXPECT_EQ(error_of([&] { parse_servers(std::string("\na tls_port=") + p, "s.txt", 1); }),
              std::string("s.txt:2: 'a tls_port=") + p + "': tls_port '" + p +
                  "' is not a port (1 to 65535)")
        << p;
  }
  for (const char* h : {"", "-a.example", "a-.example", "a..example", "a.example.", ".a",
                        "a_b.example", "a:443", "[::1]", "xn--\xc3\xa9.example"}) {
    EXPECT_EQ(error_of([&] { parse_servers(std::string("a tls_port=1 host=") + h, "s.txt", 1); }),
              std::string("s.txt:1: 'a tls_port=1 host=") + h + "': host '" + h +
                  "' is not a DNS name (letters, digits, '-' and dots, e.g. cdn1.example.com)")
        << h;
  }
  EXPECT_EQ(error_of([] { parse_servers("a host=a.example\n", "s.txt", 1); }),
            "s.txt:1: 'a host=a.example': host=a.example names the replica's https:// URL: give "
            "its tls_port=N too");
  EXPECT_EQ(error_of([] { parse_servers("a tls_port=1 tls_port=2\n", "s.txt", 1); }),
            "s.txt:1: 'a tls_port=1 tls_port=2': tls_port is given twice");
  EXPECT_EQ(error_of([] { parse_servers("a tls_port=1 host=b host=c\n", "s.txt", 1); }),
            "s.txt:1: 'a tls_port=1 host=b host=c': host is given twice");
}

TEST(Servers, DnsNames) {
  for (const char* ok :
       {"localhost", "a.example", "cdn-1.example.com", "A.EXAMPLE", "1.2.3.4", "x1"}) {
    EXPECT_TRUE(is_dns_name(ok)) << ok;
  }
  EXPECT_TRUE(is_dns_name(std::string(63, 'a') + ".example"));
  EXPECT_FALSE(is_dns_name(std::string(64, 'a') + ".example"));
  std::string long_name;
  while (long_name.size() < 250) long_name += "abcdefghi.";
  long_name += "example";
  EXPECT_FALSE(is_dns_name(long_name));
  EXPECT_TRUE(is_dns_name(long_name.substr(long_name.size() - 253)));
}

TEST(Balancer, ReplicaHostAndTlsPortInIni) {
  TempDir dir;
  const auto servers = dir.write(
      "s.txt", "# fleet\ns1 host=s1.example tls_port=8443\n\ns2 weight=2 tls_port=99999\n");
  auto msg = error_of([&] {
    balancer("[replicas]\nreplica = r1:1 host=r1.example tls_port=443\nservers_file = " + servers +
             "\n");
  });
  EXPECT_EQ(
      msg,
      servers + ":4: 's2 weight=2 tls_port=99999': tls_port '99999' is not a port (1 to 65535)");
  dir.write("s.txt", "s1 host=s1.example tls_port=8443\n");
  const BalancerSettings b = balancer(
      "[replicas]\nreplica = r1:1 host=r1.example tls_port=443\nservers_file = " + servers + "\n");
  ASSERT_EQ(b.replicas.size(), 2U);
  EXPECT_EQ(b.replicas[0], (ReplicaEntry{{"r1", 1}, 1, "r1.example", 443}));
  EXPECT_EQ(b.replicas[1], (ReplicaEntry{{"s1", 33000}, 1, "s1.example", 8443}));
  EXPECT_NO_THROW(validate(b, "b.ini"));
  msg =
      error_of([] { balancer("[replicas]\nreplica = a:1\nreplica = b:1 host=b_1 tls_port=1\n"); });
  EXPECT_EQ(msg,
            "/etc/cdn/b.ini:3: [replicas] replica: 'b:1 host=b_1 tls_port=1': host 'b_1' is not a "
            "DNS name (letters, digits, '-' and dots, e.g. cdn1.example.com)");
  // --print-config's form reads back to the same list.
  const std::string ini = to_ini(b);
  EXPECT_TRUE(Contains(ini, "replica = r1:1 host=r1.example tls_port=443")) << ini;
  // A host given some other way than the parser (a flag) is checked again.
  BalancerSettings c = b;
  c.replicas[0].tls_port = 0;
  EXPECT_TRUE(Contains(error_of([&] { validate(c, "b.ini"); }), "has host 'r1.example'"));
}

TEST(Balancer, ReplicaWeights) {
  TempDir dir;
  const auto servers = dir.write("s.txt", "s1 weight=3\ns2\n");
  const BalancerSettings b = balancer(
      "[replicas]\nreplica = r1:1 weight=40\nreplica = r2:1\nservers_file = " + servers + "\n");
  ASSERT_EQ(b.replicas.size(), 4U);
  EXPECT_EQ(b.replicas[0], (ReplicaEntry{{"r1", 1}, 40}));
  EXPECT_EQ(b.replicas[1], (ReplicaEntry{{"r2", 1}, 1}));
  EXPECT_EQ(b.replicas[2], (ReplicaEntry{{"s1", 33000}, 3}));
  EXPECT_EQ(b.replicas[3], (ReplicaEntry{{"s2", 33000}, 1}));
  EXPECT_NO_THROW(validate(b, "b.ini"));

  auto msg = error_of([] { balancer("[replicas]\nreplica = a:1\nreplica = b:1 weight=0\n"); });
  EXPECT_EQ(msg,
            "/etc/cdn/b.ini:3: [replicas] replica: 'b:1 weight=0': weight '0' is not a whole "
            "number from 1 to 1000");
  msg = error_of([] { balancer("[replicas]\nreplica = b:1 wieght=2\n"); });
  EXPECT_EQ(msg,
            "/etc/cdn/b.ini:2: [replicas] replica: 'b:1 wieght=2': 'wieght=2' is not an option "
            "(use weight=N, host=NAME, tls_port=N)");
  // The same address with another weight is still listed twice.
  msg = error_of([] { balancer("[replicas]\nreplica = a:1 weight=2\nreplica = a:1 weight=3\n"); });
  EXPECT_TRUE(Contains(msg, "/etc/cdn/b.ini:3: replica a:1 is listed twice")) << msg;

  BalancerSettings c = balancer("[replicas]\nreplica = a:1\n");
  c.replicas[0].weight = 0;  // e.g. built by hand, not parsed
  EXPECT_EQ(error_of([&] { validate(c, "b.ini"); }),
            "b.ini: [replicas]: replica a:1 has weight 0 (use 1 to 1000)");
}

TEST(Servers, LoadMissing) {
  EXPECT_TRUE(Contains(error_of([] { load_servers("/nonexistent/servers.txt", 1); }),
                       "/nonexistent/servers.txt: cannot read"));
}

// ---------------------------------------------------------------- shipped examples

TEST(Examples, EveryExampleFileParsesAndValidates) {
  const fs::path root = source_root();
  ASSERT_FALSE(root.empty()) << "cannot find etc/cdn from " << __FILE__ << " (set CDN_SOURCE_ROOT)";
  const fs::path etc = root / "etc/cdn";

  const auto r_path = (etc / "replicad.ini").string();
  const ReplicaSettings r = replica_settings(load_ini(r_path));
  EXPECT_NO_THROW(validate(r, r_path));

  const auto b_path = (etc / "balancerd.ini").string();
  const BalancerSettings b = balancer_settings(load_ini(b_path));
  EXPECT_NO_THROW(validate(b, b_path));

  // The shipped pair works on one host: the balancer's replica is where the
  // shipped replica listens, and the two do not share a port.
  ASSERT_EQ(b.replicas.size(), 1U);
  EXPECT_EQ(b.replicas[0].address, (HostPort{"127.0.0.1", r.server.port}));
  EXPECT_NE(r.server.port, b.server.port);
}

// Every key a daemon accepts appears in its example (commented or not), and
// uncommenting every commented "key = value" line still parses: the shown
// defaults are valid values.
void check_example_lists_every_key(const fs::path& path, bool balancer_file) {
  std::ifstream in(path);
  ASSERT_TRUE(in) << path;
  std::string line;
  std::string uncommented;
  while (std::getline(in, line)) {
    // "#key = value" is a commented setting; "# text" (with a space) is prose.
    if (line.size() > 1 && line[0] == '#' && line[1] != ' ' && line.find('=') != line.npos) {
      line.erase(0, 1);
    }
    uncommented += line + "\n";
  }
  const std::string tmp_name = balancer_file ? "balancerd.ini" : "replicad.ini";
  TempDir dir;
  // servers_file is relative to the ini: keep it next to the copy.
  fs::copy_file(path.parent_path() / "servers.txt", dir.path() / "servers.txt");
  const auto copy = dir.write(tmp_name, uncommented);
  const IniFile f = load_ini(copy);
  std::vector<std::string> keys;
  for (const auto& e : f.entries) keys.push_back(e.section + "." + e.key);
  const std::vector<std::string> server = {"server.address",
                                           "server.port",
                                           "server.name",
                                           "server.max_connections",
                                           "server.idle_timeout",
                                           "server.header_timeout",
                                           "server.send_timeout",
                                           "server.drain_timeout",
                                           "server.max_request_line",
                                           "server.max_header_bytes",
                                           "server.max_headers",
                                           "log.level",
                                           "log.file"};
  std::vector<std::string> expected = server;
  if (balancer_file) {
    for (const char* k :
         {"replicas.servers_file", "replicas.replica", "probe.interval", "probe.timeout",
          "probe.rise", "probe.fall", "probe.stream", "balance.policy", "balance.fallbacks",
          "balance.retry_after", "balance.hash_load_factor"}) {
      expected.push_back(k);
    }
  } else {
    for (const char* k :
         {"content.root", "content.page", "content.origin", "content.index", "content.max_age",
          "content.capacity", "content.cache_dir", "content.cache_size", "content.cache_memory",
          "content.default_ttl", "content.stale_while_revalidate", "content.stale_if_error",
          "content.stale_if_disconnected", "content.origin_timeout", "content.origin_min_rate",
          "content.ca_file"}) {
      expected.push_back(k);
    }
  }
  for (const auto& k : expected) {
    EXPECT_NE(std::find(keys.begin(), keys.end(), k), keys.end()) << k << " missing in " << path;
  }
  if (balancer_file) {
    const BalancerSettings b = balancer_settings(f);
    const BalancerSettings d;
    EXPECT_EQ(b.probe.interval, d.probe.interval);
    EXPECT_EQ(b.probe.timeout, d.probe.timeout);
    EXPECT_EQ(b.balance.policy, d.balance.policy);
    EXPECT_EQ(b.server.max_header_bytes, d.server.max_header_bytes);
    EXPECT_EQ(b.server.idle_timeout, d.server.idle_timeout);
    EXPECT_NO_THROW(validate(b, copy));
  } else {
    const ReplicaSettings r = replica_settings(f);
    const ReplicaSettings d;
    EXPECT_EQ(r.server.port, 33001);  // set, not commented: beside a balancer on 33000
    EXPECT_EQ(r.server.max_request_line, d.server.max_request_line);
    EXPECT_EQ(r.server.drain_timeout, d.server.drain_timeout);
    EXPECT_EQ(r.content.max_age, d.content.max_age);
    EXPECT_EQ(r.content.capacity, d.content.capacity);
    EXPECT_EQ(r.content.cache_size, d.content.cache_size);
    EXPECT_EQ(r.content.cache_memory, d.content.cache_memory);
    EXPECT_EQ(r.content.stale_if_error, d.content.stale_if_error);
    EXPECT_EQ(r.content.stale_if_disconnected, d.content.stale_if_disconnected);
    EXPECT_EQ(r.content.origin_timeout, d.content.origin_timeout);
    // All three sources uncommented: validate must object.
    EXPECT_TRUE(Contains(error_of([&] { validate(r, copy); }), "all set"));
  }
}

TEST(Examples, ListEveryKeyWithValidDefaults) {
  const fs::path root = source_root();
  ASSERT_FALSE(root.empty());
  check_example_lists_every_key(root / "etc/cdn/replicad.ini", false);
  check_example_lists_every_key(root / "etc/cdn/balancerd.ini", true);
}

TEST(ReplicaSettings, CacheKeys) {
  const ReplicaSettings r = replica(
      "[content]\n"
      "origin = http://127.0.0.1:8080/\n"
      "cache_dir = /var/cache/x\n"
      "cache_size = 2M\n"
      "cache_memory = 1M\n"
      "default_ttl = 5s\n"
      "stale_while_revalidate = 0\n"
      "stale_if_error = 1h\n"
      "stale_if_disconnected = 0\n"
      "origin_timeout = 1500ms\n"
      "origin_min_rate = 4K\n"
      "ca_file = /etc/ssl/x.pem\n");
  EXPECT_EQ(r.content.cache_dir, "/var/cache/x");
  EXPECT_EQ(r.content.cache_size, 2U * 1024 * 1024);
  EXPECT_EQ(r.content.cache_memory, 1U * 1024 * 1024);
  EXPECT_EQ(r.content.default_ttl, milliseconds(5000));
  EXPECT_EQ(r.content.stale_while_revalidate, milliseconds(0));
  EXPECT_EQ(r.content.stale_if_error, milliseconds(3'600'000));
  EXPECT_EQ(r.content.stale_if_disconnected, milliseconds(0));
  EXPECT_EQ(ReplicaSettings().content.stale_if_disconnected, milliseconds(24 * 3'600'000));
  EXPECT_EQ(r.content.origin_timeout, milliseconds(1500));
  EXPECT_EQ(r.content.origin_min_rate, 4096U);
  EXPECT_EQ(ReplicaSettings().content.origin_min_rate, 1024U);
  EXPECT_EQ(r.content.ca_file, "/etc/ssl/x.pem");
  EXPECT_NO_THROW(validate(r, "r.ini"));
}

TEST(ReplicaSettings, CacheKeyErrors) {
  EXPECT_TRUE(Contains(error_of([] { replica("[content]\ncache_size = lots\n"); }),
                       ":2: [content] cache_size: 'lots' is not a size"));
  EXPECT_TRUE(Contains(error_of([] { replica("[content]\ncache_size = 1K\n"); }),
                       ":2: [content] cache_size: '1K' is out of range"));
  EXPECT_TRUE(Contains(error_of([] { replica("[content]\norigin_timeout = x\n"); }),
                       ":2: [content] origin_timeout: 'x' is not a duration"));
  EXPECT_TRUE(Contains(error_of([] { replica("[content]\ncache_dir =\n"); }),
                       ":2: [content] cache_dir: must name a directory"));
  EXPECT_TRUE(Contains(error_of([] { replica("[content]\norigin = a\norigin_timeout = 0\n"); }),
                       ":3: [content] origin_timeout: '0' is out of range (allowed: 100ms to 1h)"));
  EXPECT_TRUE(Contains(error_of([] {
                         validate(replica("[content]\norigin = a\ncache_size = 1M\n"
                                          "cache_memory = 2M\n"),
                                  "r.ini");
                       }),
                       "[content] cache_memory: 2097152 bytes is more than cache_size"));
  // With root= the memory tier is the only bound: cache_size (the edge
  // cache's disk) does not cap it.
  EXPECT_NO_THROW(validate(replica("[content]\nroot = /srv\ncache_size = 1M\n"
                                   "cache_memory = 2G\n"),
                           "r.ini"));
}

// ---------------------------------------------------------------- ranges (issue 13)

// One key's accepted bounds: the ends are taken, one step beyond each end is
// refused with file, line, section, key, value and the allowed range.
struct RangeCase {
  bool balancer_file;
  const char* section;
  const char* key;
  const char* lowest;   // accepted
  const char* highest;  // accepted
  const char* below;    // refused; nullptr when nothing is below (0 of an unsigned)
  const char* above;    // refused
  const char* range;    // what the message says is allowed
};

void check_range(const RangeCase& c) {
  const std::string path = c.balancer_file ? "/etc/cdn/b.ini" : "/etc/cdn/r.ini";
  const auto text = [&](const char* value) {
    return "[" + std::string(c.section) + "]\n" + c.key + " = " + value + "\n";
  };
  const auto parse = [&](const char* value) {
    if (c.balancer_file) {
      balancer(text(value), path);
    } else {
      replica(text(value), path);
    }
  };
  const std::string what = std::string("[") + c.section + "] " + c.key;
  EXPECT_NO_THROW(parse(c.lowest)) << what << " = " << c.lowest;
  EXPECT_NO_THROW(parse(c.highest)) << what << " = " << c.highest;
  for (const char* bad : {c.below, c.above}) {
    if (bad == nullptr) continue;
    const auto msg = error_of([&] { parse(bad); });
    EXPECT_TRUE(Contains(msg, path + ":2: " + what + ": '" + bad + "'")) << what;
    EXPECT_TRUE(Contains(msg, c.range)) << what;
  }
}

constexpr const char* kTimeout = "(allowed: 100ms to 1h)";
constexpr const char* kFreshness = "(allowed: 0 to 8760h)";

TEST(Ranges, EveryDurationKey) {
  std::vector<RangeCase> cases;
  for (const bool b : {false, true}) {
    for (const char* k : {"idle_timeout", "header_timeout", "send_timeout", "drain_timeout"}) {
      cases.push_back({b, "server", k, "100ms", "1h", "99ms", "3600001ms", kTimeout});
      cases.push_back({b, "server", k, "0.1", "60m", "0", "100000000h", kTimeout});
    }
  }
  for (const char* k : {"max_age", "default_ttl", "stale_while_revalidate", "stale_if_error",
                        "stale_if_disconnected"}) {
    cases.push_back({false, "content", k, "0", "8760h", nullptr, "8761h", kFreshness});
  }
  cases.push_back({false, "content", "origin_timeout", "100ms", "1h", "50ms", "2h", kTimeout});
  cases.push_back(
      {true, "probe", "interval", "100ms", "1h", "99ms", "100000000h", "(allowed: 100ms to 1h)"});
  cases.push_back(
      {true, "probe", "interval", "0.1s", "3600s", "0", "61m", "(allowed: 100ms to 1h)"});
  cases.push_back({true, "probe", "timeout", "100ms", "1h", "10ms", "1.5h", kTimeout});
  cases.push_back(
      {true, "balance", "retry_after", "1s", "1h", "999ms", "3601s", "(allowed: 1s to 1h)"});
  for (const auto& c : cases) check_range(c);
}

TEST(Ranges, EveryCountAndSizeKey) {
  std::vector<RangeCase> cases;
  for (const bool b : {false, true}) {
    cases.push_back({b, "server", "port", "0", "65535", nullptr, "65536", "from 0 to 65535"});
    cases.push_back(
        {b, "server", "max_connections", "1", "10000000", "0", "10000001", "from 1 to 10000000"});
    cases.push_back({b, "server", "max_headers", "1", "10000", "0", "10001", "from 1 to 10000"});
    cases.push_back({b, "server", "workers", "1", "256", "0", "257", "from 1 to 256"});
    cases.push_back(
        {b, "server", "max_request_line", "64", "1M", "63", "1025K", "(allowed: 64 to 1M bytes)"});
    cases.push_back({b, "server", "max_header_bytes", "256", "64M", "255", "65537K",
                     "(allowed: 256 to 64M bytes)"});
  }
  // capacity is connections, as max_connections: 4294967295 was taken before.
  cases.push_back(
      {false, "content", "capacity", "1", "10000000", "0", "4294967295", "from 1 to 10000000"});
  cases.push_back({false, "content", "cache_size", "64K", "1024T", "65535", "1025T",
                   "(allowed: 64K to 1024T bytes)"});
  cases.push_back(
      {false, "content", "cache_memory", "0", "1T", nullptr, "1025G", "(allowed: 0 to 1T bytes)"});
  cases.push_back({true, "probe", "rise", "1", "100", "0", "101", "from 1 to 100"});
  cases.push_back({true, "probe", "fall", "1", "100", "0", "101", "from 1 to 100"});
  cases.push_back({true, "probe", "stream", "0", "3600", nullptr, "3601", "from 0 to 3600"});
  cases.push_back({true, "balance", "fallbacks", "0", "64", nullptr, "65", "from 0 to 64"});
  cases.push_back({true, "balance", "hash_load_factor", "1.001", "100", "1", "100.5",
                   "above 1.0 and at most 100"});
  for (const auto& c : cases) check_range(c);
}

TEST(Ranges, NameIsPrintableAndBounded) {
  // It goes into the CDN-Replica header: a control character would break the answer.
  EXPECT_EQ(replica("[server]\nname = edge 1 (eu-west)\n").server.name, "edge 1 (eu-west)");
  for (const std::string& bad :
       {std::string("a\x01b"), std::string("caf\xc3\xa9"), std::string("a\x7f")}) {
    const auto msg = error_of([&] { replica("[server]\nname = " + bad + "\n"); });
    EXPECT_TRUE(Contains(msg, "/etc/cdn/r.ini:2: [server] name: '" + bad +
                                  "' is not a name (printable ASCII, at most 255 characters)"));
  }
  // Longer names than a file line holds come from --name.
  ReplicaSettings r = replica("[content]\nroot = /srv\n");
  r.server.name = std::string(255, 'n');
  EXPECT_NO_THROW(validate(r, "r.ini"));
  for (const std::string& bad : {std::string(256, 'n'), std::string("x\r\nSet-Cookie: a=b")}) {
    r.server.name = bad;
    EXPECT_TRUE(Contains(error_of([&] { validate(r, "r.ini"); }),
                         "r.ini: [server] name: '" + bad + "' is not a name"));
  }
}

TEST(Ranges, ValidateChecksTheSameBounds) {
  // validate() runs on settings built otherwise too (command-line overrides).
  ReplicaSettings r = replica("[content]\nroot = /srv\n");
  ASSERT_NO_THROW(validate(r, "r.ini"));
  r.server.drain_timeout = std::chrono::hours(100'000'000);
  EXPECT_TRUE(Contains(error_of([&] { validate(r, "r.ini"); }),
                       "r.ini: [server] drain_timeout: 100000000h is out of range "
                       "(allowed: 100ms to 1h)"));
  r = replica("[content]\nroot = /srv\n");
  r.content.stale_if_error = std::chrono::hours(8761);
  EXPECT_TRUE(Contains(error_of([&] { validate(r, "r.ini"); }),
                       "[content] stale_if_error: 8761h is out of range (allowed: 0 to 8760h)"));
  r = replica("[content]\nroot = /srv\n");
  r.content.capacity = 10'000'001;
  EXPECT_TRUE(Contains(error_of([&] { validate(r, "r.ini"); }),
                       "[content] capacity: 10000001 is out of range (allowed: 1 to 10000000)"));

  BalancerSettings b = balancer("[replicas]\nreplica = a\n");
  ASSERT_NO_THROW(validate(b, "b.ini"));
  b.probe.timeout = milliseconds(99);
  EXPECT_TRUE(Contains(error_of([&] { validate(b, "b.ini"); }),
                       "b.ini: [probe] timeout: 99ms is out of range (allowed: 100ms to 1h)"));
  b = balancer("[replicas]\nreplica = a\n");
  b.balance.hash_load_factor = 101;
  EXPECT_TRUE(Contains(error_of([&] { validate(b, "b.ini"); }), "[balance] hash_load_factor"));
}

TEST(Ranges, StreamNeedsAnIntervalAReplicaCanWatch) {
  // Replicas answer a status watch longer than a minute 400: with stream > 1
  // every stream request would fail.
  const auto msg = error_of([] {
    validate(balancer("[replicas]\nreplica = a\n[probe]\ninterval = 2m\ntimeout = 1s\n"), "b.ini");
  });
  EXPECT_EQ(msg,
            "b.ini: [probe] interval: 2m is longer than a status stream allows (at most 1m while "
            "stream = 10; set [probe] stream = 0 to poll instead)");
  EXPECT_NO_THROW(validate(
      balancer("[replicas]\nreplica = a\n[probe]\ninterval = 1m\ntimeout = 1s\n"), "b.ini"));
  for (const char* stream : {"0", "1"}) {
    EXPECT_NO_THROW(validate(balancer(std::string("[replicas]\nreplica = a\n[probe]\n"
                                                  "interval = 1h\ntimeout = 1s\nstream = ") +
                                      stream + "\n"),
                             "b.ini"))
        << stream;
  }
}

TEST(NormalizeOrigin, PrefixesThatWork) {
  EXPECT_EQ(normalize_origin("http://h:8080/prefix/"), "http://h:8080/prefix/");
  EXPECT_EQ(normalize_origin("https://[2001:db8::1]:443/x"), "https://[2001:db8::1]:443/x");
  EXPECT_EQ(normalize_origin("HTTP://origin.example"), "http://origin.example/");
  EXPECT_EQ(normalize_origin("origin.example:81/a/b"), "http://origin.example:81/a/b");
  EXPECT_EQ(normalize_origin("http://h/%7Euser/"), "http://h/%7Euser/");
}

TEST(NormalizeOrigin, EachMistakeSaysWhat) {
  struct Case {
    const char* origin;
    const char* why;
  };
  for (const Case& c : {
           Case{"http://h/a?x=1#f", "it has a query ('?...')"},
           Case{"http://h?x=1", "it has a query ('?...')"},
           Case{"h/a?x", "it has a query ('?...')"},
           Case{"http://h/a#f", "it has a fragment ('#...')"},
           Case{"https://h#", "it has a fragment ('#...')"},
           Case{"http://user:pw@h/", "user@ credentials are not supported"},
           Case{"http://@h/", "user@ credentials are not supported"},
           Case{"gopher://h/", "only http:// and https:// are served"},
           Case{"http://", "it has no host"},
           Case{"http:///x", "it has no host"},
           Case{"", "it is empty"},
           Case{"http://h:99999/", "'h:99999' is not a host[:port]"},
           Case{"http://h:0/", "'h:0' is not a host[:port]"},
           Case{"http://-h/", "'-h' is not a host[:port]"},
           Case{"http://h/a b", "its path holds a character a URL cannot"},
           Case{"http://h/a\tb", "its path holds a character a URL cannot"},
           Case{"http://h/\xc3\xa9", "its path holds a character a URL cannot"},
           Case{"http://h/a\\b", "its path holds a character a URL cannot"},
           Case{"http://h/a|b", "its path holds a character a URL cannot"},
           Case{"http://h/%zz", "its path has a '%' that is not followed by two hex digits"},
           Case{"http://h/%4", "its path has a '%' that is not followed by two hex digits"},
       }) {
    const auto msg = error_of([&] { normalize_origin(c.origin); });
    EXPECT_TRUE(Contains(msg, std::string("'") + c.origin + "' is not an origin: " + c.why));
  }
}

TEST(Replica, OriginWithAQueryNamesTheLine) {
  const auto msg = error_of([] { replica("[content]\norigin = http://h/a?x=1#f\n"); });
  EXPECT_TRUE(Contains(msg,
                       "/etc/cdn/r.ini:2: [content] origin: 'http://h/a?x=1#f' is not an origin: "
                       "it has a query ('?...')"));
}

TEST(Workers, AutoIsTheOnlineCpusAndANumberIsKept) {
  EXPECT_EQ(replica("[server]\nworkers = auto\n").server.workers, 0U);
  EXPECT_EQ(ReplicaSettings().server.workers, 0U);  // auto by default
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  EXPECT_EQ(resolve_workers(0), static_cast<uint32_t>(std::max(1L, online)));
  EXPECT_EQ(resolve_workers(5), 5U);
}

TEST(Tls, OffByDefaultAndPairsCertificatesWithKeysInOrder) {
  EXPECT_FALSE(replica("[content]\nroot = /srv\n").tls.enabled());
  const ReplicaSettings r = replica(
      "[tls]\nport = 443\naddress = [::1]\ncertificate = a.pem\nkey = a.key\n"
      "certificate = /etc/tls/b.pem\nkey = b.key\nocsp = a.ocsp\nhandshake_timeout = 3s\n"
      "[content]\nroot = /srv\n",
      "/etc/cdn/r.ini");
  EXPECT_EQ(r.tls.port, 443);
  EXPECT_EQ(r.tls.address, "::1");
  EXPECT_EQ(r.tls.certificates, (std::vector<std::string>{"/etc/cdn/a.pem", "/etc/tls/b.pem"}));
  EXPECT_EQ(r.tls.keys, (std::vector<std::string>{"/etc/cdn/a.key", "/etc/cdn/b.key"}));
  EXPECT_EQ(r.tls.ocsp, (std::vector<std::string>{"/etc/cdn/a.ocsp"}));
  EXPECT_EQ(r.tls.handshake_timeout, milliseconds(3000));
  EXPECT_EQ(r.tls.ktls, "auto");  // the default
  EXPECT_EQ(replica("[tls]\nktls = OFF\n[content]\nroot = /srv\n").tls.ktls, "off");
  EXPECT_NO_THROW(validate(r, "r.ini"));
  const ReplicaSettings back = replica_settings(parse_ini(to_ini(r), "/x/r.ini"));
  EXPECT_EQ(back.tls.certificates, r.tls.certificates);
  EXPECT_EQ(back.tls.keys, r.tls.keys);
  EXPECT_EQ(to_ini(back), to_ini(r));
}

TEST(Tls, RefusesWhatCannotServe) {
  const auto check = [](const std::string& ini) {
    return error_of([&] { validate(replica(ini + "[content]\nroot = /srv\n"), "r.ini"); });
  };
  EXPECT_EQ(check("[tls]\nport = 443\n"),
            "r.ini: [tls] port: 443 needs a certificate and its key ([tls] certificate, key)");
  EXPECT_EQ(check("[tls]\nport = 443\ncertificate = /a.pem\n"),
            "r.ini: [tls]: 1 certificate(s) but 0 key(s) (give one key after each certificate, "
            "in the same order)");
  EXPECT_EQ(check("[server]\nport = 443\n[tls]\nport = 443\ncertificate = /a\nkey = /b\n"),
            "r.ini: [tls] port: 443 is [server] port too (HTTPS needs a port of its own)");
  EXPECT_NO_THROW(
      validate(balancer("[server]\nport = 443\naddress = 127.0.0.1\n[tls]\nport = 443\naddress = "
                        "127.0.0.2\ncertificate = /a\nkey = /b\n[replicas]\nreplica = r:1\n"),
               "b.ini"));
  EXPECT_TRUE(Contains(error_of([] { replica("[tls]\naddress = example.com\n"); }),
                       "is not an IP address"));
  EXPECT_TRUE(Contains(error_of([] { replica("[tls]\ncertificate =\n"); }), "must name a file"));
}

}  // namespace
}  // namespace cdn::config
