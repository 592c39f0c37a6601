#ifndef C_FAST_PATH_REFERENCE_H
#define C_FAST_PATH_REFERENCE_H

/// The engine's fast path as lean C, for `offload bench` to measure in the same run as the
/// engine: the same 64-byte UDP frames of `flows` flows, built the same way into a burst of
/// 32 slots; each burst received (copied) into pool buffers, keyed with the checks the
/// engine's key makes (EtherType, version, header length, fragment, lengths), hashed and
/// prefetched (home slot and the next), looked up in an open-addressing table of 64-byte
/// entries at the engine's load, tested as the engine tests an entry (kind, do-not-use,
/// epoch, TTL, the L4 checksum's place), rewritten (MACs, TTL, source NAT, incremental
/// checksums with the deltas `FlowEntry` computes), counted per entry, tested for RTP and
/// FIN, and copied out into a sink ring. None of the engine's generality: one frame type
/// at fixed size, no link metadata or partial checksums, no exits to the software, no
/// per-port or per-reason counters, no pool or wire bookkeeping beyond a free stack.
///
/// Runs at least one round of 64 bursts. Returns million packets per second over about
/// `seconds`, or -1 if a packet missed the table or the last frame sent has a wrong
/// checksum (either would make the figure meaningless).
double offload_fast_path_reference_mpps(long flows, double seconds);

#endif
