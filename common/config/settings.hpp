// SPDX-License-Identifier: MIT
// The typed, validated configuration of both daemons. Built from an IniFile
// (pure: tests call these directly) and then overridden by command-line flags.
// Unknown sections or keys, bad values and contradictions throw config::Error.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/ini.hpp"

namespace cdn::config {

using std::chrono::milliseconds;

// [server]: the listening side, shared by both daemons.
struct ServerSettings {
  std::string address = "0.0.0.0";
  uint16_t port = 33000;
  std::string name;  // shown in status; default: hostname:port (filled by the daemon)
  uint32_t max_connections = 10000;
  milliseconds idle_timeout{60'000};    // keep-alive connection with no request
  milliseconds header_timeout{10'000};  // a request head must arrive within this
  milliseconds send_timeout{60'000};    // no write progress for this long closes
  milliseconds drain_timeout{30'000};   // SIGTERM: finish in-flight work within this
  uint64_t max_request_line = 8 * 1024ULL;
  uint64_t max_header_bytes = 16 * 1024ULL;
  uint32_t max_headers = 100;
  // Request body bytes read (and, in origin mode, forwarded); over: 413.
  // Held in memory while the request is handled.
  uint64_t max_body = 64 * 1024ULL;
  // Event loops serving connections, each on its own thread; 0 is "auto"
  // (one per online CPU, resolved by the daemon). Read at start only.
  uint32_t workers = 0;
};

// The most workers [server] workers and --workers accept.
inline constexpr uint32_t kMaxWorkers = 256;
// The workers to run for a [server] workers value (0: the online CPUs).
uint32_t resolve_workers(uint32_t configured);

// [tls]: HTTPS beside the plain port, for both daemons. Off (port 0) by
// default. The n-th key goes with the n-th certificate; the first
// certificate is the default, the others are chosen by the name a client
// asks for (SNI). Certificates, keys and OCSP responses are re-read on
// SIGHUP; a set that does not load is refused and the old one kept.
struct TlsSettings {
  uint16_t port = 0;
  std::string address;                     // empty: [server] address
  std::vector<std::string> certificates;   // PEM: the leaf, then its chain
  std::vector<std::string> keys;           // PEM private keys (ECDSA or RSA), unencrypted
  std::vector<std::string> ocsp;           // DER OCSP responses to staple
  milliseconds handshake_timeout{10'000};  // a TLS handshake must finish within this
  // "auto": hand sessions to the kernel (kTLS) where it offers the tls ULP,
  // so file bodies go out with sendfile; "off": never. Read at start.
  std::string ktls = "auto";
  bool enabled() const { return port != 0; }
};

// [log]
struct LogSettings {
  std::string level = "info";  // trace, debug, info, warn, error, critical, off
  std::string file;            // also log to this file (the seed's -l)
  // One line per answered request: "off", "journal", or a file path
  // (reopened on SIGHUP, for logrotate).
  std::string access = "off";
  std::string access_format = "combined";  // combined | json
};

// [admin]: who reaches /.cdn/status, /.cdn/metrics and the other endpoints
// that are not content. Others get 403.
struct AdminSettings {
  std::string allow = "127.0.0.0/8, ::1";  // CIDR blocks, commas or blanks between
  std::string token_file;  // the token purges must carry; empty: no purge is accepted
};

// [content] of replicad: exactly one of root, page, origin.
struct ContentSettings {
  std::string root;    // serve this directory
  std::string page;    // serve this single file at "/" (and at its own name)
  std::string origin;  // pull from this URL (http:// or https://); a bare host means http://host/
  std::string index = "index.html";
  milliseconds max_age{60'000};  // Cache-Control max-age sent to clients
  uint32_t capacity = 1000;      // connections at which this replica reports load 1.0
  // Edge cache (used with origin=): where and how much, and the operator's
  // freshness overrides, each off (0) unless set: by default the cache
  // grants no freshness or staleness the origin did not (RFC 9111 §4.2.2
  // heuristics aside).
  std::string cache_dir = "/var/cache/cdn";     // the unit's CacheDirectory=
  uint64_t cache_size = 1024ULL * 1024 * 1024;  // bytes of bodies on disk (LRU beyond)
  uint64_t cache_memory = 64ULL * 1024 * 1024;  // bytes of small bodies also held in memory
  // Objects the edge cache holds at most (LRU beyond): each costs an index
  // entry in memory and two files on disk whatever its size. Never unbounded.
  uint64_t cache_entries = 100'000;
  // Variants (Vary) one URL may hold at most; its least recently used goes.
  uint32_t max_variants = 8;
  milliseconds default_ttl{0};  // freshness without max-age/Expires, in place of the heuristic
  milliseconds stale_while_revalidate{0};  // serve stale while refreshing, unless the origin says
  milliseconds stale_if_error{0};          // serve stale while the origin fails, unless it says
  // Serve stale while the origin cannot be reached at all (refused, closed,
  // timed out), as RFC 9111 section 4.2.4 lets a disconnected cache; 0: off.
  milliseconds stale_if_disconnected{24 * 3'600'000};
  milliseconds origin_timeout{10'000};  // connect / no-progress bound for origin fetches
  // Bytes a second an origin fetch must average over origin_timeout, or it
  // gives up (504 or a stale copy): a trickling origin cannot hold its
  // waiting clients for ever. 0: only a fetch that stalls gives up.
  uint64_t origin_min_rate = 1024;
  std::string ca_file;  // PEM bundle trusted for https origins; empty: the system's
  // Content-Type by extension (mime.types format); empty, or a file that
  // cannot be read: the built-in table of common web types alone.
  std::string types_file = "/etc/mime.types";
};

// [site NAME] of replicad: a site of its own, chosen by the request's Host.
// Its content keys start from [content]'s values (its root, page and origin
// excepted); capacity and types_file are the replica's, in [content] only.
struct SiteSettings {
  std::string name;                // [a-z0-9_-], at most 63 characters; not "default"
  std::vector<std::string> hosts;  // host_key() form (site_map.hpp): lower case, no port
  ContentSettings content;
  // The site's own certificate (PEM, leaf then chain) and key, added to
  // those of the [tls] port (chosen by SNI); both or neither.
  std::string certificate;
  std::string key;
};
// The name of the site [content] makes (status, metrics' site label).
inline constexpr std::string_view kDefaultSite = "default";

struct ReplicaSettings {
  ServerSettings server;
  TlsSettings tls;
  LogSettings log;
  AdminSettings admin;
  // With a root, page or origin: the default site, which serves every Host
  // no [site] names (the only site when there is no [site]). Without one
  // (allowed only beside [site] sections), other hosts get 421.
  ContentSettings content;
  std::vector<SiteSettings> sites;  // in file order
};
// Whether [content] names a source (and so is the default site).
bool has_default_site(const ReplicaSettings& s);
// Where a site's edge cache lives: [content]'s in cache_dir itself (as
// before sites existed), a [site NAME]'s in <its cache_dir>/sites/NAME, so
// that no object of one site is ever found under another's key, even when
// they share a cache_dir.
std::string site_cache_dir(const SiteSettings& site);

// [replicas] + [probe] + [balance] of balancerd.
struct ProbeSettings {
  milliseconds interval{1'000};
  milliseconds timeout{500};
  uint32_t rise = 2;  // good probes to go up
  uint32_t fall = 2;  // failed probes to go down
  // A steady replica's status comes as a stream of this many documents, one
  // per interval, on one request (GET /.cdn/status?watch=...); 0 or 1: one
  // request per probe.
  uint32_t stream = 10;
};

// [balance] policy, named once when the settings are read: the table
// switches on it and never sees the name.
enum class BalancePolicy { Best, RoundRobin, LeastLoaded, P2C, Consistent };
// The names of balancerd.ini and --policy, ASCII case ignored: "best",
// "round-robin", "least-loaded", "p2c", "consistent".
std::optional<BalancePolicy> policy_from_string(std::string_view s) noexcept;
std::string_view to_string(BalancePolicy p) noexcept;
// policy_from_string() or Error("<where>: 'x' is not a policy (use one of ...)").
BalancePolicy parse_policy(std::string_view s, std::string_view where);

struct BalanceSettings {
  BalancePolicy policy = BalancePolicy::P2C;
  uint32_t fallbacks = 2;  // extra replicas named in the 302 answer
  milliseconds retry_after{2'000};
  double hash_load_factor = 1.25;  // consistent: no replica above factor x mean
};

// One replica of balancerd's list: "host[:port] [weight=N] [host=NAME]
// [tls_port=N]". The weight is the operator's, for round-robin only (as
// HAProxy's and nginx's `weight`): a replica of weight 4 gets 4 clients for
// every 1 of a replica of weight 1. The load-aware policies go by what the
// replicas report and ignore it. tls_port (0: none) is where the replica
// serves HTTPS ([tls] port of its replicad.ini): clients that came to the
// balancer over TLS are sent to https://NAME:tls_port/..., NAME being
// `public_host` (what its certificate names) or else the address's host.
struct ReplicaEntry {
  HostPort address;
  uint32_t weight = 1;
  std::string public_host{};  // lower case, a DNS name; empty: address.host
  uint16_t tls_port = 0;
  bool operator==(const ReplicaEntry&) const = default;
};
inline constexpr uint32_t kMaxWeight = 1000;

// A host name of DNS syntax (RFC 1123 2.1): dot-separated labels of 1 to 63
// letters, digits and '-', no label starting or ending with '-', at most
// 253 characters, no trailing dot. What a certificate's DNS name can match.
bool is_dns_name(std::string_view name) noexcept;

struct BalancerSettings {
  ServerSettings server;
  TlsSettings tls;
  LogSettings log;
  AdminSettings admin;
  std::string servers_file;  // [replicas] servers_file: seed format, one replica a line
  // [replicas] replica = host[:port] [options] (repeatable), then servers_file's.
  std::vector<ReplicaEntry> replicas;
  ProbeSettings probe;
  BalanceSettings balance;
  // [admin] state_dir: where the purge ledger is kept across restarts
  // (purges owed to replicas that were away); empty: systemd's
  // $STATE_DIRECTORY when set, else memory only.
  std::string state_dir;
};

// The values a duration key accepts, both ends included. A value outside is
// refused (at start-up and on reload) with the range in the message: a
// duration that silently means "never" (a probe interval of 100000000h, a
// timeout of a century) is a mistake, not a setting. replica_settings and
// balancer_settings check them against the file's line; validate() again.
struct DurationRange {
  milliseconds min;
  milliseconds max;
};
// Every *_timeout of [server] and [content], and [probe] timeout.
inline constexpr DurationRange kTimeoutRange{milliseconds(100), std::chrono::hours(1)};
// max_age, default_ttl, stale_while_revalidate, stale_if_error: 0 (none) to a year.
inline constexpr DurationRange kFreshnessRange{milliseconds(0), std::chrono::hours(24 * 365)};
// [probe] interval: a replica's status watch takes 100 ms at least; an hour
// is already a balancer that learns nothing.
inline constexpr DurationRange kProbeIntervalRange{milliseconds(100), std::chrono::hours(1)};
// [balance] retry_after: sent in whole seconds (Retry-After: 0 would ask for a hammering).
inline constexpr DurationRange kRetryAfterRange{std::chrono::seconds(1), std::chrono::hours(1)};
// A status stream ([probe] stream > 1) asks a replica for one document an
// interval; replicas send at most one a minute (they answer a longer watch
// 400: kWatchIntervalMax in daemons/replicad/replica.cc), so a longer
// interval needs stream = 0 or 1.
inline constexpr milliseconds kMaxStreamInterval{60'000};

// Build from a parsed file; throws Error naming file:line:key.
ReplicaSettings replica_settings(const IniFile& file);
BalancerSettings balancer_settings(const IniFile& file);

// Every [section] key each file accepts, in the parser's order: what the
// documentation (cdn.ini(5)) must describe; a test holds it to this list.
struct KnownKey {
  std::string section;
  std::string key;
};
std::vector<KnownKey> replica_keys();
std::vector<KnownKey> balancer_keys();

// "host[:port] [weight=N] [host=NAME] [tls_port=N]": an address (a bare
// host takes default_port; the port may come out 0 when default_port is 0,
// for the caller to refuse) and optional options separated by blanks, each
// at most once: weight=N (1..kMaxWeight), host=NAME (is_dns_name; needs
// tls_port) and tls_port=N (1..65535). Throws Error with the problem alone
// (no file prefix): the callers name the file and line, or the flag.
ReplicaEntry parse_replica_entry(std::string_view text, uint16_t default_port);
// The entry as parse_replica_entry reads it back: the address, then the
// options that differ from their defaults.
std::string replica_entry_text(const ReplicaEntry& r);

// Seed's servers.txt: one "host" or "host:port" a line, optionally followed by
// the options of parse_replica_entry; '#' comments and blank lines ignored; a bare host takes
// default_port. Throws Error "FILE:LINE: ...".
std::vector<ReplicaEntry> parse_servers(std::string_view text, const std::string& path,
                                        uint16_t default_port);
std::vector<ReplicaEntry> load_servers(const std::string& path, uint16_t default_port);

// Checks that do not depend on where a value came from (run again after
// command-line overrides): exactly one content source, timeouts > 0, etc.
// Throws Error "PATH: problem".
void validate(const ReplicaSettings& s, const std::string& path);
void validate(const BalancerSettings& s, const std::string& path);

// The settings as an INI file that reads back to the same settings: every
// key of every section, defaults included (durations and sizes in the largest
// unit that shows them exactly). What --print-config prints: the merged
// result of defaults, the file and the flags. A balancer's replicas are
// listed one `replica =` a line, servers_file's included (the file's name
// only in a comment, so that reading the output back does not list them twice).
std::string to_ini(const ReplicaSettings& s);
std::string to_ini(const BalancerSettings& s);

// An origin as the user wrote it -> a URL: "http://..." and "https://..." are
// kept (scheme lower-cased, "/" added when there is no path); a bare
// "host[:port][/path]" becomes "http://host[:port]/path". replica_settings
// applies it to [content] origin; main applies it to the seed's -w flag.
// Throws Error "'x' is not an origin (...)" without a file prefix.
std::string normalize_origin(std::string_view origin);

}  // namespace cdn::config
