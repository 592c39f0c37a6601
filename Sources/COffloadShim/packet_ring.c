#ifdef __linux__
#define _GNU_SOURCE
#include "OffloadLinux.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <linux/if_packet.h>

// A packet socket's receive ring (PACKET_RX_RING, TPACKET_V2): the kernel copies each frame
// into the next free slot of memory shared with us and marks it ours, so a poll reads frames
// without a system call, and a poll that finds nothing costs one load. TPACKET_V3 packs
// frames tighter but hands a block over only when it is full or its timer (1 ms at least)
// runs out: too late for a handshake waiting on its SYN-ACK.
//
// Slots hold a frame of the interface's MTU. A larger one (a GSO super-frame of up to
// 64 KiB) goes whole to the socket's ordinary queue (PACKET_COPY_THRESH) and its slot, cut
// short, says so (TP_STATUS_COPY); the kernel fills slot and queue under one lock, so the
// queue's frames come in the order of their slots.
struct offload_packet_ring {
    uint8_t *map;
    size_t map_bytes;
    unsigned frame_size;
    unsigned frames_per_block;
    unsigned block_size;
    unsigned frame_count;
    unsigned head;
    unsigned empty_polls; // since a frame last waited
};

int offload_packet_ring_attach(int fd, unsigned frame_size, size_t ring_bytes, struct offload_packet_ring **ring_out) {
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) page = 4096;
    frame_size = (frame_size + TPACKET_ALIGNMENT - 1) & ~(unsigned)(TPACKET_ALIGNMENT - 1);
    // Blocks of 64 KiB (or one frame's pages, if larger): the kernel wants each block in
    // one piece of memory, and small ones are easy to find.
    unsigned block = 65536;
    if (frame_size > block) block = (unsigned)((frame_size + page - 1) / page * page);
    unsigned per_block = block / frame_size;
    unsigned blocks = (unsigned)(ring_bytes / block);
    if (blocks < 4) blocks = 4;

    int version = TPACKET_V2;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, sizeof version) < 0) return -errno;
    // Any frame larger than a slot goes to the queue as well (the threshold is a flag here:
    // the kernel compares the frame with the slot, not with this value).
    int copy = 1;
    if (setsockopt(fd, SOL_PACKET, PACKET_COPY_THRESH, &copy, sizeof copy) < 0) return -errno;
    struct tpacket_req request = {
        .tp_block_size = block, .tp_block_nr = blocks,
        .tp_frame_size = frame_size, .tp_frame_nr = blocks * per_block,
    };
    if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &request, sizeof request) < 0) return -errno;
    size_t bytes = (size_t)block * blocks;
    void *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (map == MAP_FAILED) return -errno;
    struct offload_packet_ring *ring = calloc(1, sizeof *ring);
    if (!ring) {
        munmap(map, bytes);
        return -ENOMEM;
    }
    *ring = (struct offload_packet_ring){
        .map = map, .map_bytes = bytes, .frame_size = frame_size, .frames_per_block = per_block,
        .block_size = block, .frame_count = blocks * per_block,
    };
    *ring_out = ring;
    return 0;
}

void offload_packet_ring_release(struct offload_packet_ring *ring) {
    if (!ring) return;
    munmap(ring->map, ring->map_bytes);
    free(ring);
}

unsigned offload_packet_ring_frames(const struct offload_packet_ring *ring) { return ring->frame_count; }

static struct tpacket2_hdr *slot(const struct offload_packet_ring *ring, unsigned index) {
    unsigned block = index / ring->frames_per_block;
    unsigned within = index % ring->frames_per_block;
    return (struct tpacket2_hdr *)(ring->map + (size_t)block * ring->block_size + (size_t)within * ring->frame_size);
}

static void give_back(struct offload_packet_ring *ring, struct tpacket2_hdr *h) {
    __atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    ring->head = ring->head + 1 == ring->frame_count ? 0 : ring->head + 1;
}

int offload_packet_ring_receive(struct offload_packet_ring *ring, int fd, int count, void *const *frames,
                                size_t capacity, void *headers, int header_size, size_t *lengths,
                                unsigned char *vlan_tagged) {
    if (count > 64) count = 64;
    int n = 0;
    while (n < count) {
        struct tpacket2_hdr *h = slot(ring, ring->head);
        uint32_t status = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
        if (!(status & TP_STATUS_USER)) break;
        if (status & TP_STATUS_COPY) {
            // The whole frame is the queue's next.
            int got = offload_packet_socket_receive(fd, 1, frames + n, capacity, (char *)headers + 16 * n,
                                                    header_size, lengths + n, vlan_tagged + n);
            if (got == -EAGAIN && n > 0) break; // should not happen: try this slot again
            if (got == -EAGAIN) return -EAGAIN;
            give_back(ring, h);
            if (got < 0) {
                if (n > 0) break; // the error is lost with this frame; those read go first
                return got;
            }
            n += got;
            continue;
        }
        const uint8_t *mac = (const uint8_t *)h + h->tp_mac;
        if (header_size > 0) memcpy((char *)headers + 16 * n, mac - header_size, (size_t)header_size);
        if (h->tp_snaplen < h->tp_len) {
            // Cut short and not queued (the receive buffer was full): reported as longer
            // than the room, so it counts as truncated.
            lengths[n] = (size_t)header_size + capacity + 1;
        } else {
            if (h->tp_len <= capacity) memcpy(frames[n], mac, h->tp_len);
            lengths[n] = (size_t)header_size + h->tp_len;
        }
        vlan_tagged[n] = (status & TP_STATUS_VLAN_VALID) ? 1 : 0;
        give_back(ring, h);
        n++;
    }
    return n > 0 ? n : -EAGAIN;
}

int offload_packet_ring_waiting(struct offload_packet_ring *ring, int fd) {
    const struct tpacket2_hdr *h = slot(ring, ring->head);
    if (__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER) {
        ring->empty_polls = 0;
        return 1;
    }
    // An error (the interface went down) is raised on the socket, not in the ring, and
    // keeps the socket readable until it is read: look for one now and then.
    if ((++ring->empty_polls & 255) == 0) {
        int pending = 0;
        socklen_t length = sizeof pending;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &pending, &length) == 0 && pending) return -pending;
    }
    return 0;
}
#endif
