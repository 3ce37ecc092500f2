// SPDX-License-Identifier: MIT
// cdn.ini(5) against the parser: every key replica_settings() and
// balancer_settings() accept is described under its section, with a default,
// and the page describes no key the parser does not know. Adding a key
// without documenting it fails here.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/config/settings.hpp"

namespace cdn::config {
namespace {

// section -> key -> the entry's text (its "*key* = ..." line and the
// indented lines after it), from the scdoc source.
using Documented = std::map<std::string, std::map<std::string, std::string>>;

Documented read_page(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot read " << path;
  Documented doc;
  std::string line, section, key;
  while (std::getline(in, line)) {
    if (line.rfind("#", 0) == 0) {
      // "## [content]" opens a section; any other heading closes it.
      const size_t open = line.find("## [");
      section = open == 0 ? line.substr(4, line.find(']') - 4) : "";
      key.clear();
    } else if (!section.empty() && line.rfind("*", 0) == 0 && line.find("* = ") != line.npos) {
      key = line.substr(1, line.find('*', 1) - 1);
      EXPECT_EQ(doc[section].count(key), 0u) << "[" << section << "] " << key << " twice";
      doc[section][key] = line + "\n";
    } else if (!key.empty() && line.rfind("\t", 0) == 0) {
      doc[section][key] += line + "\n";
    } else {
      key.clear();
    }
  }
  return doc;
}

std::set<std::pair<std::string, std::string>> known_keys() {
  std::set<std::pair<std::string, std::string>> out;
  for (const auto& k : replica_keys()) out.emplace(k.section, k.key);
  for (const auto& k : balancer_keys()) out.emplace(k.section, k.key);
  return out;
}

TEST(ConfigDoc, TheParserKnowsKeys) {
  // A guard against an empty list passing every check below.
  EXPECT_GE(replica_keys().size(), 25u);
  EXPECT_GE(balancer_keys().size(), 20u);
}

TEST(ConfigDoc, EveryKnownKeyIsDocumentedWithADefault) {
  const Documented doc = read_page(CDN_INI_MAN_SOURCE);
  for (const auto& [section, key] : known_keys()) {
    const auto s = doc.find(section);
    ASSERT_NE(s, doc.end()) << "cdn.ini(5) has no \"## [" << section << "]\" section";
    const auto k = s->second.find(key);
    ASSERT_NE(k, s->second.end()) << "[" << section << "] " << key << " is not described in "
                                  << CDN_INI_MAN_SOURCE << " (add \"*" << key
                                  << "* = _value_\" and its text under ## [" << section << "])";
    EXPECT_NE(k->second.find("Default:"), std::string::npos)
        << "[" << section << "] " << key << ": no \"Default:\" in\n"
        << k->second;
  }
}

TEST(ConfigDoc, EveryDocumentedKeyIsKnown) {
  const auto known = known_keys();
  for (const auto& [section, keys] : read_page(CDN_INI_MAN_SOURCE)) {
    for (const auto& [key, text] : keys) {
      EXPECT_TRUE(known.count({section, key}))
          << "cdn.ini(5) describes [" << section << "] " << key << ", which the parser refuses";
    }
  }
}

// What the page says is accepted: each key with a value from its text, parsed.
TEST(ConfigDoc, TheExampleIsAccepted) {
  const IniFile f = parse_ini(
      "[server]\nport = 33000\n\n[content]\norigin = https://www.example.org/\n"
      "cache_size = 20G\n",
      "cdn.ini(5) EXAMPLE");
  const auto s = replica_settings(f);
  validate(s, f.path);
  EXPECT_EQ(s.content.cache_size, 20ULL << 30);
}

}  // namespace
}  // namespace cdn::config
