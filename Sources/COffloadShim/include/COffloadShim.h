#ifndef COFFLOAD_SHIM_H
#define COFFLOAD_SHIM_H

#include <stdint.h>
#include <stddef.h>
#include "OffloadLinux.h"

/// Reads CLOCK_MONOTONIC in nanoseconds.
int64_t offload_monotonic_ns(void);

/// A hint to bring a cache line in before it is used.
static inline void offload_prefetch(const void *address) { __builtin_prefetch(address); }

/// Makes SIGINT and SIGTERM set a flag (and interrupt a blocking wait) instead of ending the
/// process, so that a loop can stop cleanly and print its counters. Returns 0 or -errno.
int offload_stop_signals_install(void);

/// The signal number that asked the process to stop, or 0.
int offload_stop_requested(void);

/// Reads CLOCK_REALTIME in nanoseconds (for capture time stamps).
int64_t offload_realtime_ns(void);

#endif
