// SPDX-License-Identifier: MIT
#include "common/http/fields.hpp"

#include <algorithm>

namespace cdn::http {

std::vector<std::string_view> field_lines(Fields fields, std::string_view name) {
  std::vector<std::string_view> out;
  for (const Header& h : fields) {
    if (iequals(h.name, name)) out.emplace_back(h.value);
  }
  return out;
}

std::string combined(Fields fields, std::string_view name) {
  std::string out;
  for (const Header& h : fields) {
    if (!iequals(h.name, name)) continue;
    if (!out.empty()) out.append(", ");
    out.append(h.value);
  }
  return out;
}

bool has_field(Fields fields, std::string_view name) {
  return std::any_of(fields.begin(), fields.end(),
                     [&](const Header& h) { return iequals(h.name, name); });
}

void for_each_member(std::string_view value,
                     const std::function<void(std::string_view)>& on_member) {
  size_t begin = 0;
  bool quoted = false;
  for (size_t i = 0; i <= value.size(); ++i) {
    if (i < value.size()) {
      const char c = value[i];
      if (quoted && c == '\\') {
        ++i;  // the escaped byte, whatever it is, stays in the string
        continue;
      }
      if (c == '"') quoted = !quoted;
      if (quoted || c != ',') continue;
    }
    const std::string_view member = text::trim_ows(value.substr(begin, i - begin));
    if (!member.empty()) on_member(member);
    begin = i + 1;
  }
}

std::vector<std::string_view> list_members(Fields fields, std::string_view name) {
  std::vector<std::string_view> out;
  for (const Header& h : fields) {
    if (!iequals(h.name, name)) continue;
    for_each_member(h.value, [&](std::string_view m) { out.push_back(m); });
  }
  return out;
}

std::vector<std::string> connection_options(Fields fields) {
  std::vector<std::string> out;
  for (const std::string_view m : list_members(fields, "Connection")) {
    out.push_back(text::lowered(m));
  }
  return out;
}

bool is_hop_by_hop(std::string_view name, std::span<const std::string> options) {
  static constexpr std::string_view kFixed[] = {"connection", "keep-alive", "te",
                                                "transfer-encoding", "upgrade"};
  for (const std::string_view f : kFixed) {
    if (iequals(name, f)) return true;
  }
  if (text::istarts_with(name, "proxy-")) return true;
  return std::any_of(options.begin(), options.end(),
                     [&](const std::string& o) { return iequals(name, o); });
}

std::vector<Header> end_to_end(Fields fields) {
  const std::vector<std::string> options = connection_options(fields);
  std::vector<Header> out;
  out.reserve(fields.size());
  for (const Header& h : fields) {
    if (!is_hop_by_hop(h.name, options)) out.push_back(h);
  }
  return out;
}

}  // namespace cdn::http
