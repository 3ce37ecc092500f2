// SPDX-License-Identifier: MIT
// INI files (read with inih) to typed values, with errors that name
// file:line and key. Pure apart from reading the file itself.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace cdn::config {

// Every configuration problem. what() reads "FILE:LINE: [section] key: problem"
// (or "FILE: problem" when no line applies), ready to print or log as is.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Entry {
  std::string section;
  std::string key;
  std::string value;
  int line = 0;
};

// A "[name]" heading; recorded even when the section holds no key, so that an
// empty unknown section is still reported.
struct Section {
  std::string name;
  int line = 0;
};

struct IniFile {
  std::string path;               // for messages
  std::vector<Entry> entries;     // in file order; a key may repeat
  std::vector<Section> sections;  // headings in file order; a name may repeat
};

// Parse INI text (inih syntax). Throws Error on a syntax error. Comments: '#'
// and ';' alike, at the start of a line or after a blank (space or tab), run
// to the end of the line; anywhere else they are part of the value.
// Leading whitespace is ignored (no multi-line values: an indented line is an
// ordinary line). A line may hold at most kMaxLineLength characters.
inline constexpr std::size_t kMaxLineLength =
    198;  // inih's fixed 200-byte line buffer, less "\n\0"
IniFile parse_ini(std::string_view text, const std::string& path);
// Read and parse a file. Throws Error when it cannot be read.
IniFile load_ini(const std::string& path);
// Reads a whole (small) configuration file; throws Error "PATH: cannot read: why".
std::string read_config_file(const std::string& path);

// "500ms", "2s", "1m", "1h", "1d", "1.5s"; a bare number means seconds. nullopt when malformed or
// negative.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view s);
// "512", "64K", "1M", "2G" (powers of 1024; "KiB"/"MB" spellings accepted). nullopt when malformed.
std::optional<uint64_t> parse_size(std::string_view s);
// "yes/no/true/false/on/off/1/0".
std::optional<bool> parse_bool(std::string_view s);
// "host:port", "[v6]:port", "host" (then default_port). nullopt when malformed.
struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string str() const;  // "host:port" or "[v6]:port"
  bool operator==(const HostPort&) const = default;
};
std::optional<HostPort> parse_host_port(std::string_view s, uint16_t default_port);

// Formats an Error message for an entry: "FILE:LINE: [section] key: what".
std::string where(const IniFile& file, const Entry& e, std::string_view what);

// Strict integer parsing for configuration values: decimal digits only.
std::optional<uint64_t> parse_uint(std::string_view s);

}  // namespace cdn::config
