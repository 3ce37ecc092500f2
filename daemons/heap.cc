// SPDX-License-Identifier: MIT
#include "daemons/heap.hpp"

#include <malloc.h>

namespace cdn::daemon {

size_t heap_free_bytes() { return mallinfo2().fordblks; }

void trim_heap() { malloc_trim(0); }

}  // namespace cdn::daemon
