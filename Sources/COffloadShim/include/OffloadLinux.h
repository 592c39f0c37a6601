#ifndef COFFLOAD_LINUX_H
#define COFFLOAD_LINUX_H

// Linux link plumbing: TUN/TAP and AF_PACKET setup, packet statistics, epoll and eventfd.
// Every function returns a descriptor or 0 on success, and -errno on failure. The Swift side
// (OffloadLink) does the logic; this file only reaches the ioctls and constants Swift's
// Glibc overlay does not import.

#include <stddef.h>
#include <stdint.h>

#ifdef __linux__

/// Bytes in the virtio-net header the TAP and packet-socket links use (struct virtio_net_hdr).
#define OFFLOAD_VNET_HEADER_SIZE 10

/// Opens /dev/net/tun as the TAP device `name` (IFF_TAP|IFF_NO_PI), non-blocking and
/// close-on-exec. With `virtio_net_header` set it adds IFF_VNET_HDR, a 10-byte header and
/// checksum + TSO4 offload (TUN_F_CSUM|TUN_F_TSO4). The device's actual name is written to
/// `actual_name` (at least 16 bytes) when not NULL. Returns the descriptor or -errno
/// (-EBUSY: another descriptor holds a device of that name).
int offload_tap_open(const char *name, int virtio_net_header, char *actual_name);

/// Reads the TAP device's hardware address through its descriptor (works wherever the
/// device's network side lives, even in another namespace). 0 or -errno.
int offload_tap_hardware_address(int fd, uint8_t address[6]);

/// Reads a network interface's hardware address by name (in the caller's namespace).
int offload_interface_hardware_address(const char *name, uint8_t address[6]);

/// Reads an interface's MTU by name. The MTU (> 0) or -errno.
int offload_interface_mtu(const char *name);
/// Sets an interface's MTU (SIOCSIFMTU); 0 or -errno.
int offload_interface_set_mtu(const char *name, int mtu);

/// Sets (up != 0) or clears IFF_UP on an interface by name. 0 or -errno.
int offload_interface_set_up(const char *name, int up);

/// A packet socket's receive ring (PACKET_RX_RING, TPACKET_V2), opaque.
struct offload_packet_ring;

/// Opens an AF_PACKET SOCK_RAW socket on interface `name` for every protocol (ETH_P_ALL),
/// non-blocking and close-on-exec, ignoring frames this host sends on the interface
/// (PACKET_IGNORE_OUTGOING), with PACKET_VNET_HDR when `virtio_net_header` is set, and a
/// receive buffer of `receive_buffer_bytes` (SO_RCVBUFFORCE, falling back to SO_RCVBUF;
/// 0 keeps the default). The interface index goes to `interface_index` when not NULL.
/// Returns the descriptor or -errno (-ENODEV: no such interface).
/// With `ring_frame_size` > 0, a receive ring of that slot size and `receive_buffer_bytes`
/// goes in before the bind (`offload_packet_ring_attach`) and comes back in `ring`.
int offload_packet_socket_open(const char *name, int virtio_net_header, int receive_buffer_bytes,
                               unsigned ring_frame_size, struct offload_packet_ring **ring,
                               int *interface_index);

/// Reads and resets the socket's PACKET_STATISTICS: frames the socket saw (drops included)
/// and frames dropped for want of buffer space since the last call. 0 or -errno.
int offload_packet_socket_statistics(int fd, uint32_t *packets, uint32_t *drops);

/// The receive buffer size the kernel granted (SO_RCVBUF), or -errno.
int offload_socket_receive_buffer(int fd);

/// Receives up to `count` (at most 64) frames from a packet socket with one recvmmsg
/// (MSG_DONTWAIT | MSG_TRUNC): frame i into `frames[i]` (`capacity` bytes each), preceded
/// when `header_size` > 0 by its virtio-net header into `headers + 16 * i`. `lengths[i]`
/// gets what the kernel reports for it: header and whole frame, a truncated frame's full
/// length. `vlan_tagged[i]` is 1 when the frame came with an 802.1Q tag, which the kernel
/// took off (PACKET_AUXDATA). Returns the number of frames received, or -errno (-EAGAIN:
/// none waiting).
int offload_packet_socket_receive(int fd, int count, void *const *frames, size_t capacity,
                                  void *headers, int header_size, size_t *lengths, unsigned char *vlan_tagged);

/// Gives `fd` (not yet bound, so no frame waits outside the ring) a receive ring of slots of
/// `frame_size` bytes (kernel header, virtio-net header and frame) in about `ring_bytes`;
/// frames larger than a slot wait in the socket's queue, their slot marked. 0 or -errno.
int offload_packet_ring_attach(int fd, unsigned frame_size, size_t ring_bytes, struct offload_packet_ring **ring);

/// Unmaps the ring and frees it (the socket is closed separately).
void offload_packet_ring_release(struct offload_packet_ring *ring);

/// The ring's slot count.
unsigned offload_packet_ring_frames(const struct offload_packet_ring *ring);

/// 1 when a frame waits in the ring, 0 when none does, or -errno when an error was pending
/// on the socket (it is looked for, and cleared, after every 256 calls that found nothing).
int offload_packet_ring_waiting(struct offload_packet_ring *ring, int fd);

/// `offload_packet_socket_receive` from the ring: copies up to `count` (at most 64) waiting
/// frames out and gives their slots back, reading a frame too large for its slot from the
/// socket. Same arguments and results (-EAGAIN when none waits).
int offload_packet_ring_receive(struct offload_packet_ring *ring, int fd, int count, void *const *frames,
                                size_t capacity, void *headers, int header_size, size_t *lengths,
                                unsigned char *vlan_tagged);

/// Sends up to 64 whole frames (each `lengths[i]` bytes at `frames[i]`) with one sendmmsg;
/// returns how many went, or -errno.
int offload_packet_socket_send(int fd, int count, void *const *frames, const size_t *lengths);

/// Creates an epoll instance (close-on-exec). Descriptor or -errno.
int offload_epoll_create(void);

/// Adds `fd` to `epoll_fd`, level-triggered, for readability; `token` comes back from wait.
int offload_epoll_add(int epoll_fd, int fd, uint64_t token);

/// Removes `fd` from `epoll_fd`.
int offload_epoll_remove(int epoll_fd, int fd);

/// Waits up to `timeout_ms` (-1: forever) and writes up to `max` ready tokens. The number
/// of ready descriptors (0 on timeout), or -errno (-EINTR when a signal came).
int offload_epoll_wait(int epoll_fd, uint64_t *tokens, int max, int timeout_ms);

/// Creates a non-blocking, close-on-exec eventfd. Descriptor or -errno.
int offload_eventfd_create(void);

/// Adds 1 to the eventfd (wakes a waiter). 0 or -errno.
int offload_eventfd_signal(int fd);

/// Reads and clears the eventfd's count. The count (0 if it was clear) or -errno.
int64_t offload_eventfd_drain(int fd);

/// Sets the calling thread's nice value (-20 to 19; threads it creates start with it).
/// Lowering it needs CAP_SYS_NICE. 0 or -errno.
int offload_thread_set_nice(int nice);

/// The calling thread's nice value in `*nice`. 0 or -errno.
int offload_thread_nice(int *nice);

/// The CPUs the calling thread may run on (its affinity mask), or -errno.
int offload_cpus_available(void);

#endif // __linux__

#endif
