#include "CFastPathReference.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

enum { burst = 32, frameSize = 64, poolBuffers = 1024, bufferStride = 2112, headroom = 64, sinkSlots = 256 };

/// One table slot, one cache line: the key, the rewrite and the counters, as `FlowEntry`.
typedef struct {
    uint64_t keyHigh, keyLow;
    uint64_t ethernetFirst;
    uint32_t ethernetLast, newSource, newDestination, newPorts;
    uint16_t ipChecksumDelta, l4ChecksumDelta, outputPort;
    uint8_t control, epoch;
    uint32_t bytesLow, packetsLow, inSoftwareCount, lastUsedTick;
} __attribute__((aligned(64))) Entry;

/// `FlowEntryCold`: the counters' high halves, carried into once every 2^32.
typedef struct {
    uint32_t bytesHigh;
    uint16_t packetsHigh;
    uint8_t closing;
} Cold;

/// Where the last run leaves a sum of the sink's bytes.
volatile uint64_t offload_fast_path_reference_check;

static const uint64_t occupiedBit = 0x100, seed = 0x6f66666c6f616421ull;
/// `FlowEntry.control`: the action's kind in the low two bits (forward is 0), do-not-use on top.
static const uint8_t forwardKind = 0, kindAndDoNotUse = 0x83, carriesRTPBit = 0x40;

/// `FlowKey.tableHash`.
static inline uint64_t tableHash(uint64_t a, uint64_t b) {
    uint64_t h = (a ^ seed) * 0x9E3779B97F4A7C15ull;
    h ^= (b ^ (seed >> 7 | seed << 57)) * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ull;
    return h ^ (h >> 29);
}

static inline uint16_t addDelta(uint16_t checksum, uint16_t delta) {
    uint32_t s = (uint32_t)(uint16_t)~checksum + delta;
    return (uint16_t)~((s & 0xffff) + (s >> 16));
}

static inline uint16_t fold(uint32_t s) {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static inline uint16_t be16(uint16_t x) { return __builtin_bswap16(x); }

/// `FlowEntry.addChange` and `finishDelta`: a header field going from `old` to `new` adds
/// ~old + new to the checksum's change, folded to 16 bits in network order.
static inline uint32_t addChange32(uint32_t sum, uint32_t old, uint32_t new) {
    sum += (uint16_t)~(old >> 16) + (new >> 16);
    return sum + (uint16_t)~(old & 0xffff) + (new & 0xffff);
}

static inline uint16_t finishDelta(uint32_t s) {
    while (s > 0xffff) s = (s & 0xffff) + (s >> 16);
    return be16(s == 0 ? 0xffff : (uint16_t)s);
}

/// splitmix64, as the benchmark's `SeededRandom` draws a flow per packet.
static inline uint64_t nextRandom(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/// Flow f's frame from a template whose changing words are zero (as `FlowFrames.write`):
/// source 10.0.x.y with x.y = f >> 16, source port f & 0xffff, to 10.200.0.1:4000.
static void writeFrame(uint8_t *frame, const uint8_t *template, uint32_t ipSum, uint32_t udpSum, uint64_t flow) {
    memcpy(frame, template, frameSize);
    uint16_t low = (uint16_t)(flow >> 16), port = (uint16_t)flow;
    uint16_t v = be16(low);
    memcpy(frame + 28, &v, 2);
    v = be16(port);
    memcpy(frame + 34, &v, 2);
    v = be16(fold(ipSum + low));
    memcpy(frame + 24, &v, 2);
    uint16_t udp = fold(udpSum + low + port);
    v = be16(udp == 0 ? 0xffff : udp);
    memcpy(frame + 40, &v, 2);
}

double offload_fast_path_reference_mpps(long flows, double seconds) {
    long slotCount = 2;
    while (slotCount < 2 * flows) slotCount <<= 1;
    const long mask = slotCount - 1;
    size_t tableBytes = (size_t)slotCount * sizeof(Entry);
    size_t hugePage = 2u << 20;
    Entry *table = aligned_alloc(tableBytes >= hugePage ? hugePage : 64, tableBytes);
    Cold *cold = calloc((size_t)slotCount, sizeof(Cold));
    uint8_t *template = aligned_alloc(64, frameSize), *slots = aligned_alloc(64, burst * frameSize);
    uint8_t *pool = aligned_alloc(64, (size_t)poolBuffers * bufferStride), *sink = aligned_alloc(64, sinkSlots * 128);
    if (!table || !cold || !template || !slots || !pool || !sink) {
        free(table); free(cold); free(template); free(slots); free(pool); free(sink);
        return -1;
    }
    if (tableBytes >= hugePage) madvise(table, tableBytes, MADV_HUGEPAGE);
    memset(table, 0, tableBytes);

    // The template: Ethernet, IPv4 (TTL 64, UDP) from 10.0.0.0 to 10.200.0.1, UDP to 4000,
    // 22 zero bytes of payload; both checksums over it.
    memset(template, 0, frameSize);
    template[12] = 0x08; template[14] = 0x45; template[17] = 50; template[22] = 64; template[23] = 17;
    template[26] = 10; template[30] = 10; template[31] = 200; template[33] = 1;
    template[36] = 4000 >> 8; template[37] = 4000 & 0xff; template[39] = 30;
    uint32_t sum = 0;
    for (int i = 14; i < 34; i += 2) sum += (uint32_t)template[i] << 8 | template[i + 1];
    uint32_t ipSum = (uint16_t)~fold(sum);
    uint16_t ipChecksum = be16(fold(sum));
    memcpy(template + 24, &ipChecksum, 2);
    sum = 0x0a00 + 0x0000 + 0x0ac8 + 0x0001 + 17 + 30;  // pseudo-header
    for (int i = 34; i < frameSize; i += 2) sum += (uint32_t)template[i] << 8 | template[i + 1];
    uint32_t udpSum = (uint16_t)~fold(sum);
    uint16_t udpChecksum = be16(fold(sum));
    memcpy(template + 40, &udpChecksum, 2);

    // Every flow's entry: forward out of port 1 with source NAT to 192.0.2.1, port + 1,
    // and its checksum deltas computed as `FlowEntry` does.
    const uint64_t destination = 0x0ac80001;
    const uint32_t natSource = 0xc0000201;
    for (long f = 0; f < flows; f++) {
        uint32_t source = 0x0a000000u | (uint32_t)(f >> 16);
        uint16_t port = (uint16_t)f, natPort = (uint16_t)(f + 1);
        uint64_t a = (uint64_t)source << 32 | destination;
        uint64_t b = (uint64_t)port << 48 | 4000ull << 32 | 17;
        long s = (long)(tableHash(a, b) & (uint64_t)mask);
        while (table[s].keyLow) s = (s + 1) & mask;
        Entry *e = &table[s];
        e->keyHigh = a;
        e->keyLow = b | occupiedBit;
        e->ethernetFirst = 0x0200000000000002ull;
        e->ethernetLast = 0xaa000002;
        e->newSource = __builtin_bswap32(natSource);
        e->newDestination = __builtin_bswap32((uint32_t)destination);
        e->newPorts = (uint32_t)be16(natPort) | (uint32_t)be16(4000) << 16;
        uint32_t addresses = addChange32(0, source, natSource);
        e->ipChecksumDelta = finishDelta(addresses + 0xfeff);  // and TTL - 1
        e->l4ChecksumDelta = finishDelta(addresses + (uint16_t)~port + natPort);
        e->outputPort = 1;
        e->control = forwardKind;
    }

    int32_t freeSlots[poolBuffers];
    int freeCount = poolBuffers;
    for (int i = 0; i < poolBuffers; i++) freeSlots[i] = poolBuffers - 1 - i;
    uint8_t *buffers[burst];
    int32_t bufferSlots[burst];
    uint64_t keysHigh[burst], keysLow[burst];
    long homes[burst];
    uint64_t random = 7, sent = 0, forwarded = 0, transmittedBytes = 0, rtpPackets = 0, closings = 0;
    const uint8_t epoch = 0;
    int sinkHead = 0;
    const double start = seconds_now(), end = start + seconds;
    double now = start;
    do {
        for (int round = 0; round < 64; round++) {
            for (int i = 0; i < burst; i++) {
                uint64_t flow = (uint64_t)(((__uint128_t)nextRandom(&random) * (uint64_t)flows) >> 64);
                writeFrame(slots + i * frameSize, template, ipSum, udpSum, flow);
            }
            sent += burst;
            // Receive: each frame copied into a pool buffer.
            for (int i = 0; i < burst; i++) {
                int32_t slot = freeSlots[--freeCount];
                bufferSlots[i] = slot;
                buffers[i] = pool + (long)slot * bufferStride + headroom;
                memcpy(buffers[i], slots + i * frameSize, frameSize);
            }
            // Keys, with the checks `FlowKey(frame:port:)` makes, and home slots, prefetched.
            for (int i = 0; i < burst; i++) {
                const uint8_t *p = buffers[i];
                const int count = frameSize;
                uint16_t etherType, fragment;
                memcpy(&etherType, p + 12, 2);
                memcpy(&fragment, p + 20, 2);
                const int headerLength = (p[14] & 0xf) * 4, l4 = 14 + headerLength;
                const uint8_t proto = p[23];
                if (count < 34 || be16(etherType) != 0x0800 || p[14] >> 4 != 4 || headerLength < 20
                    || count < l4 || (be16(fragment) & 0x3fff) != 0
                    || ((proto == 6 || proto == 17) && count < l4 + 4)) {
                    homes[i] = -1;
                    continue;
                }
                uint64_t addresses;
                uint32_t ports = 0;
                memcpy(&addresses, p + 26, 8);
                if (proto == 6 || proto == 17) memcpy(&ports, p + l4, 4);
                keysHigh[i] = __builtin_bswap64(addresses);
                keysLow[i] = (uint64_t)__builtin_bswap32(ports) << 32 | proto;
                long s = (long)(tableHash(keysHigh[i], keysLow[i]) & (uint64_t)mask);
                homes[i] = s;
                __builtin_prefetch(&table[s]);
                __builtin_prefetch(&table[(s + 1) & mask]);
            }
            for (int i = 0; i < burst; i++) {
                const uint64_t wanted = keysLow[i] | occupiedBit;
                Entry *e = NULL;
                for (long s = homes[i]; s >= 0; s = (s + 1) & mask) {
                    if (table[s].keyLow == wanted && table[s].keyHigh == keysHigh[i]) { e = &table[s]; break; }
                    if (table[s].keyLow == 0) break;
                }
                uint8_t *p = buffers[i];
                const int l4 = 14 + (p[14] & 0xf) * 4;
                const int checksumAt = p[23] == 6 ? l4 + 16 : p[23] == 17 ? l4 + 6 : -1;
                if (e && (e->control & kindAndDoNotUse) == forwardKind && e->epoch == epoch && p[22] > 1
                    && checksumAt >= 0 && checksumAt + 2 <= frameSize) {
                    memcpy(p, &e->ethernetFirst, 8);
                    memcpy(p + 8, &e->ethernetLast, 4);
                    p[22] -= 1;
                    uint16_t c;
                    memcpy(&c, p + 24, 2);
                    c = addDelta(c, e->ipChecksumDelta);
                    memcpy(p + 24, &c, 2);
                    memcpy(p + 26, &e->newSource, 4);
                    memcpy(p + 30, &e->newDestination, 4);
                    memcpy(p + l4, &e->newPorts, 4);
                    memcpy(&c, p + checksumAt, 2);
                    if (c != 0) {
                        c = addDelta(c, e->l4ChecksumDelta);
                        if (c == 0) c = 0xffff;
                        memcpy(p + checksumAt, &c, 2);
                    }
                    const uint32_t bytes = e->bytesLow + frameSize;
                    e->bytesLow = bytes;
                    e->packetsLow += 1;
                    if (bytes < frameSize || e->packetsLow == 0) {
                        Cold *high = &cold[e - table];
                        if (bytes < frameSize) high->bytesHigh += 1;
                        if (e->packetsLow == 0) high->packetsHigh += 1;
                    }
                    e->lastUsedTick = (uint32_t)round;
                    // The engine's two per-packet tests of the entry and the frame: RTP
                    // statistics, and a TCP FIN or RST that ends the entry (neither occurs here).
                    if (e->control & carriesRTPBit) rtpPackets += 1;
                    if (p[23] == 6 && (p[l4 + 13] & 0x05) != 0) closings += 1;
                    // Transmit: copied into the sink's ring, which drops it.
                    memcpy(sink + sinkHead * 128, p, frameSize);
                    sinkHead = (sinkHead + 1) & (sinkSlots - 1);
                    transmittedBytes += frameSize;
                    forwarded += 1;
                }
                freeSlots[freeCount++] = bufferSlots[i];
            }
        }
        now = seconds_now();
    } while (now < end);
    // Read what was sent and counted, so that no copy or counter can be optimised away.
    uint64_t check = transmittedBytes + rtpPackets + closings, packets = 0;
    for (int i = 0; i < sinkSlots * 128; i++) check += sink[i];
    for (long s = 0; s < slotCount; s++) {
        packets += table[s].packetsLow + table[s].bytesLow + table[s].lastUsedTick + cold[s].bytesHigh + cold[s].packetsHigh;
    }
    offload_fast_path_reference_check = check + packets;
    // The last frame sent must carry correct checksums (the deltas are real ones).
    const uint8_t *last = sink + ((sinkHead + sinkSlots - 1) & (sinkSlots - 1)) * 128;
    uint32_t ipCheck = 0, udpCheck = 17 + 30;
    for (int i = 14; i < 34; i += 2) ipCheck += (uint32_t)last[i] << 8 | last[i + 1];
    for (int i = 26; i < frameSize; i += 2) udpCheck += (uint32_t)last[i] << 8 | last[i + 1];
    const int checksumsHold = fold(ipCheck) == 0 && fold(udpCheck) == 0;
    free(table); free(cold); free(template); free(slots); free(pool); free(sink);
    if (forwarded != sent || !checksumsHold) return -1;
    return (double)forwarded / (now - start) / 1e6;
}
