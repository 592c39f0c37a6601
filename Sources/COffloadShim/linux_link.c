#ifdef __linux__
#define _GNU_SOURCE
#include "OffloadLinux.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

static int copy_name(char dst[IFNAMSIZ], const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n >= IFNAMSIZ) return -EINVAL;
    memset(dst, 0, IFNAMSIZ);
    memcpy(dst, name, n);
    return 0;
}

int offload_tap_open(const char *name, int virtio_net_header, char *actual_name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    int rc = copy_name(ifr.ifr_name, name);
    if (rc < 0) return rc;
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (virtio_net_header ? IFF_VNET_HDR : 0);

    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -errno;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) goto fail;
    if (virtio_net_header) {
        int size = OFFLOAD_VNET_HEADER_SIZE;
        if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) goto fail;
        if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_TSO4)) < 0) goto fail;
    }
    if (actual_name) {
        memcpy(actual_name, ifr.ifr_name, IFNAMSIZ);
        actual_name[IFNAMSIZ - 1] = 0;
    }
    return fd;
fail:
    rc = -errno;
    close(fd);
    return rc;
}

int offload_tap_hardware_address(int fd, uint8_t address[6]) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) return -errno;
    memcpy(address, ifr.ifr_hwaddr.sa_data, 6);
    return 0;
}

/// Runs one SIOC ioctl on a throwaway datagram socket.
static int interface_ioctl(unsigned long request, struct ifreq *ifr) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -errno;
    int rc = ioctl(s, request, ifr) < 0 ? -errno : 0;
    close(s);
    return rc;
}

int offload_interface_hardware_address(const char *name, uint8_t address[6]) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    int rc = copy_name(ifr.ifr_name, name);
    if (rc < 0) return rc;
    rc = interface_ioctl(SIOCGIFHWADDR, &ifr);
    if (rc < 0) return rc;
    memcpy(address, ifr.ifr_hwaddr.sa_data, 6);
    return 0;
}

int offload_interface_mtu(const char *name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    int rc = copy_name(ifr.ifr_name, name);
    if (rc < 0) return rc;
    rc = interface_ioctl(SIOCGIFMTU, &ifr);
    return rc < 0 ? rc : ifr.ifr_mtu;
}

int offload_interface_set_mtu(const char *name, int mtu) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    int rc = copy_name(ifr.ifr_name, name);
    if (rc < 0) return rc;
    ifr.ifr_mtu = mtu;
    return interface_ioctl(SIOCSIFMTU, &ifr);
}

int offload_interface_set_up(const char *name, int up) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    int rc = copy_name(ifr.ifr_name, name);
    if (rc < 0) return rc;
    rc = interface_ioctl(SIOCGIFFLAGS, &ifr);
    if (rc < 0) return rc;
    if (up) ifr.ifr_flags |= IFF_UP; else ifr.ifr_flags &= ~IFF_UP;
    return interface_ioctl(SIOCSIFFLAGS, &ifr);
}

int offload_packet_socket_open(const char *name, int virtio_net_header, int receive_buffer_bytes,
                               unsigned ring_frame_size, struct offload_packet_ring **ring,
                               int *interface_index) {
    char ifname[IFNAMSIZ];
    int rc = copy_name(ifname, name);
    if (rc < 0) return rc;
    if (ring) *ring = NULL;
    unsigned index = if_nametoindex(ifname);
    if (index == 0) return errno ? -errno : -ENODEV;

    // Protocol 0 until bind: no frame is queued before the options are in place.
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    if (virtio_net_header && setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0) goto fail;
    if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0) goto fail;
    // The kernel takes an 802.1Q tag off before a packet socket sees the frame and says so
    // only here: without it, a tagged frame would pass for the untagged LAN's.
    if (setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof one) < 0) goto fail;
    if (receive_buffer_bytes > 0) {
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &receive_buffer_bytes, sizeof receive_buffer_bytes) < 0 &&
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer_bytes, sizeof receive_buffer_bytes) < 0)
            goto fail;
    }
    if (ring_frame_size > 0) {
        rc = offload_packet_ring_attach(fd, ring_frame_size, (size_t)(receive_buffer_bytes > 0 ? receive_buffer_bytes : 1 << 20), ring);
        if (rc < 0) {
            close(fd);
            return rc;
        }
    }
    struct sockaddr_ll address;
    memset(&address, 0, sizeof address);
    address.sll_family = AF_PACKET;
    address.sll_protocol = htons(ETH_P_ALL);
    address.sll_ifindex = (int)index;
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0) goto fail;
    // Clear any error raised between bind and now (an interface that was down, say).
    int pending = 0;
    socklen_t length = sizeof pending;
    (void)getsockopt(fd, SOL_SOCKET, SO_ERROR, &pending, &length);
    if (interface_index) *interface_index = (int)index;
    return fd;
fail:
    rc = -errno;
    if (ring && *ring) {
        offload_packet_ring_release(*ring);
        *ring = NULL;
    }
    close(fd);
    return rc;
}

int offload_packet_socket_statistics(int fd, uint32_t *packets, uint32_t *drops) {
    struct tpacket_stats stats;
    socklen_t length = sizeof stats;
    memset(&stats, 0, sizeof stats);
    if (getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &stats, &length) < 0) return -errno;
    *packets = stats.tp_packets;
    *drops = stats.tp_drops;
    return 0;
}

int offload_socket_receive_buffer(int fd) {
    int value = 0;
    socklen_t length = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &value, &length) < 0) return -errno;
    return value;
}

int offload_packet_socket_receive(int fd, int count, void *const *frames, size_t capacity,
                                  void *headers, int header_size, size_t *lengths, unsigned char *vlan_tagged) {
    struct mmsghdr messages[64];
    struct iovec vectors[128];
    union {
        char bytes[CMSG_SPACE(sizeof(struct tpacket_auxdata))];
        struct cmsghdr align;
    } control[64];
    if (count > 64) count = 64;
    if (count <= 0) return 0;
    for (int i = 0; i < count; i++) {
        int parts = 0;
        if (header_size > 0) {
            vectors[2 * i] = (struct iovec){ .iov_base = (char *)headers + 16 * i, .iov_len = (size_t)header_size };
            parts = 1;
        }
        vectors[2 * i + parts] = (struct iovec){ .iov_base = frames[i], .iov_len = capacity };
        memset(&messages[i], 0, sizeof messages[i]);
        messages[i].msg_hdr.msg_iov = &vectors[2 * i];
        messages[i].msg_hdr.msg_iovlen = (size_t)parts + 1;
        messages[i].msg_hdr.msg_control = control[i].bytes;
        messages[i].msg_hdr.msg_controllen = sizeof control[i].bytes;
    }
    int n;
    do {
        n = recvmmsg(fd, messages, (unsigned)count, MSG_DONTWAIT | MSG_TRUNC, NULL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) {
        lengths[i] = messages[i].msg_len;
        vlan_tagged[i] = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&messages[i].msg_hdr); c; c = CMSG_NXTHDR(&messages[i].msg_hdr, c)) {
            if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA) continue;
            struct tpacket_auxdata aux;
            memcpy(&aux, CMSG_DATA(c), sizeof aux);
            if (aux.tp_status & TP_STATUS_VLAN_VALID) vlan_tagged[i] = 1;
        }
    }
    return n;
}

int offload_packet_socket_send(int fd, int count, void *const *frames, const size_t *lengths) {
    struct mmsghdr messages[64];
    struct iovec vectors[64];
    if (count > 64) count = 64;
    if (count <= 0) return 0;
    for (int i = 0; i < count; i++) {
        vectors[i] = (struct iovec){ .iov_base = frames[i], .iov_len = lengths[i] };
        memset(&messages[i], 0, sizeof messages[i]);
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    int n;
    do {
        n = sendmmsg(fd, messages, (unsigned)count, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

int offload_epoll_create(void) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int offload_epoll_add(int epoll_fd, int fd, uint64_t token) {
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = EPOLLIN;
    event.data.u64 = token;
    return epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) < 0 ? -errno : 0;
}

int offload_epoll_remove(int epoll_fd, int fd) {
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    return epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, &event) < 0 ? -errno : 0;
}

int offload_epoll_wait(int epoll_fd, uint64_t *tokens, int max, int timeout_ms) {
    struct epoll_event events[64];
    if (max > 64) max = 64;
    if (max < 1) max = 1;
    int n = epoll_wait(epoll_fd, events, max, timeout_ms);
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) tokens[i] = events[i].data.u64;
    return n;
}

int offload_eventfd_create(void) {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int offload_eventfd_signal(int fd) {
    uint64_t one = 1;
    for (;;) {
        if (write(fd, &one, sizeof one) == (ssize_t)sizeof one) return 0;
        if (errno == EINTR) continue;
        // EAGAIN: the counter is at its maximum; the waiter will wake anyway.
        return errno == EAGAIN ? 0 : -errno;
    }
}

int64_t offload_eventfd_drain(int fd) {
    uint64_t value = 0;
    for (;;) {
        if (read(fd, &value, sizeof value) == (ssize_t)sizeof value) return (int64_t)value;
        if (errno == EINTR) continue;
        return errno == EAGAIN ? 0 : -errno;
    }
}

#endif // __linux__
