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

/// Makes standard output line-buffered, also into a file or a pipe (Swift 6 cannot touch
/// the C global `stdout` itself).
void offload_stdout_line_buffered(void);

/// The Internet checksum's inner loop with the widest vectors the CPU has (AVX-512 or AVX2,
/// chosen when the library loads): sums the longest multiple of 64 bytes into a 64-bit total
/// equal, modulo 0xFFFF, to their native 16-bit words' sum, and says how many bytes it took
/// in `consumed` (0 on a CPU without AVX2: the caller sums everything).
uint64_t offload_checksum_wide_sum(const void *bytes, size_t count, size_t *consumed);

/// The same with vectors of at most `bits` (512, 256; 0 for none), for tests of each loop.
uint64_t offload_checksum_wide_sum_using(int bits, const void *bytes, size_t count, size_t *consumed);

/// Reads CLOCK_REALTIME in nanoseconds (for capture time stamps).
int64_t offload_realtime_ns(void);

/// Bytes malloc has handed out and not taken back: from its heap and as mapped chunks (glibc's
/// mallinfo2; 0 where there is none). For benchmarks that report what a structure allocates.
size_t offload_malloc_bytes(void);

#endif
