// SPDX-License-Identifier: MIT
// The libuv side of read-while-writer (fill.hpp): one client streaming a
// body from the file its fill is writing, on the client's own loop.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/net/server.hpp"
#include "daemons/replicad/fill.hpp"
#include "daemons/workers.hpp"

namespace cdn::replica {

// After the head is begun (with a Content-Length unless `chunked`): sends
// the bytes [offset, end) of the body (end nullopt: to its end) from `fd`
// (owned; a descriptor of the file being written) as they arrive, at the
// client's pace: a piece is queued only once the one before was handed to
// the kernel, read from the file with sendfile, so a slow client costs no
// memory and never holds the fill back. Wakes come through `home`, the
// inbox of this exchange's loop. A failed fill closes the connection.
// `owner` is let go when `fd` is closed (the edge cache counts the file's
// blocks until then). `first`: the body's first bytes, sent from memory
// (next_fill_step's `first`), null when the file holds all there is.
void stream_fill(net::Exchange& ex, std::shared_ptr<FillProgress> fill, int fd, uint64_t offset,
                 std::optional<uint64_t> end, bool chunked, std::shared_ptr<daemon::Inbox> home,
                 std::shared_ptr<const void> owner = nullptr,
                 std::shared_ptr<const std::string> first = nullptr);

// Whether this client can be streamed to: without a length the body is
// chunked, which an HTTP/1.0 client does not know (it waits for the end).
bool can_stream(const http::Request& req, const FillProgress& fill);

}  // namespace cdn::replica
