// SPDX-License-Identifier: MIT
// Counts operator new calls made on the calling thread (a test reads its
// own counter, or a loop thread's from inside a handler). Replaces the
// global operator new: include it in one file of a test executable only.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <new>

namespace {
thread_local uint64_t tl_allocations = 0;
}

// noinline: GCC would otherwise pair an inlined free() with the built-in new
// and warn (-Wmismatched-new-delete).
__attribute__((noinline)) void* operator new(std::size_t n) {
  ++tl_allocations;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
// The nothrow form too: its memory comes back through the delete below, so
// it must come from malloc (a sanitizer's own new would call that a mismatch).
__attribute__((noinline)) void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  ++tl_allocations;
  return std::malloc(n == 0 ? 1 : n);
}
__attribute__((noinline)) void operator delete(void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete(void* p, std::size_t) noexcept { std::free(p); }
