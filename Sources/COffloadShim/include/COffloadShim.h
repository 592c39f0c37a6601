#ifndef COFFLOAD_SHIM_H
#define COFFLOAD_SHIM_H

#include <stdint.h>
#include <stddef.h>
#include "OffloadLinux.h"

/// Reads CLOCK_MONOTONIC in nanoseconds.
int64_t offload_monotonic_ns(void);

/// A hint to bring a cache line in before it is used.
static inline void offload_prefetch(const void *address) { __builtin_prefetch(address); }

#endif
