// SPDX-License-Identifier: MIT
// INI text -> typed settings: anything but a config::Error escaping is a bug
// (a daemon start-up or reload must fail with a message, not crash).
#include <algorithm>
#include <cstdint>
#include <string>

#include "common/config/ini.hpp"
#include "common/config/settings.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = cdn::fuzz::as_view(data, size);
  cdn::config::IniFile file;
  try {
    file = cdn::config::parse_ini(text, "fuzz.ini");
  } catch (const cdn::config::Error&) {
    return 0;
  }
  // servers_file names a file to read: the text is fuzzed, not the file system
  // (a seed naming /dev/stdin would block the replay).
  std::erase_if(file.entries, [](const cdn::config::Entry& e) { return e.key == "servers_file"; });
  try {
    const auto r = cdn::config::replica_settings(file);
    cdn::config::validate(r, file.path);
  } catch (const cdn::config::Error& e) {
    CDN_FUZZ_CHECK(std::string(e.what()).size() > 0);
  }
  try {
    const auto b = cdn::config::balancer_settings(file);
    cdn::config::validate(b, file.path);
  } catch (const cdn::config::Error& e) {
    CDN_FUZZ_CHECK(std::string(e.what()).size() > 0);
  }
  return 0;
}
