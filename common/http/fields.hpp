// SPDX-License-Identifier: MIT
// Reading header fields the way RFC 9110 §5 asks: a field may come as several
// lines, and a list-based field's lines combine into one comma-separated list
// (§5.3); commas inside quoted strings do not separate members (§5.6.1).
// Also the hop-by-hop set a gateway drops in both directions (§7.6.1).
// Pure: no I/O, no allocation beyond the vectors returned.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/http/message.hpp"

namespace cdn::http {

// A header block as received or stored: lines in order, names as sent.
using Fields = std::span<const Header>;

// Every line named `name` (case-insensitive), in order.
std::vector<std::string_view> field_lines(Fields fields, std::string_view name);
// The lines named `name` combined with ", " (§5.3); "" when there is none.
std::string combined(Fields fields, std::string_view name);
// Whether a line named `name` is present.
bool has_field(Fields fields, std::string_view name);

// Calls on_member(member) for every non-empty member of a comma-separated
// list value, trimmed of OWS; commas within a quoted-string (with its
// backslash escapes) belong to the member. Empty members ("a, , b") are
// skipped as §5.6.1 asks of recipients.
void for_each_member(std::string_view value,
                     const std::function<void(std::string_view)>& on_member);
// The members of every line named `name`, in order.
std::vector<std::string_view> list_members(Fields fields, std::string_view name);

// The field names a `Connection` header lists, lower-cased (§7.6.1).
std::vector<std::string> connection_options(Fields fields);
// A field that describes one connection, not the message (§7.6.1): Connection,
// Keep-Alive, TE, Transfer-Encoding, Upgrade, Proxy-* (Proxy-Connection,
// Proxy-Authorization, Proxy-Authenticate, ...), or one `options` names.
// `options` comes from connection_options() of the same message.
bool is_hop_by_hop(std::string_view name, std::span<const std::string> options);
// `fields` without its hop-by-hop lines: what a gateway forwards, either way.
std::vector<Header> end_to_end(Fields fields);

}  // namespace cdn::http
