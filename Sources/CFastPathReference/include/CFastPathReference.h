#ifndef C_FAST_PATH_REFERENCE_H
#define C_FAST_PATH_REFERENCE_H

/// The engine's fast path as lean C, for `offload bench` to measure in the same run as the
/// engine: the same 64-byte UDP frames of `flows` flows, built the same way into a burst of
/// 32 slots; each burst received (copied) into pool buffers, keyed, hashed and prefetched
/// (home slot and the next), looked up in an open-addressing table of 64-byte entries at
/// the engine's load, rewritten (MACs, TTL, source NAT, incremental checksums), counted
/// per entry and copied out into a sink ring. None of the engine's generality: no link
/// metadata, no error paths, no per-port or per-reason counters.
///
/// Returns million packets per second over about `seconds`, or -1 if a packet missed the
/// table (which would make the figure meaningless).
double offload_fast_path_reference_mpps(long flows, double seconds);

#endif
