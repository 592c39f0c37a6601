#!/bin/bash
# Captures the OffloadWire test fixtures from real Linux traffic between two namespaces.
set -eu
OUT=${1:-.}
A=wirefix-a-$$; B=wirefix-b-$$; VA=wfa$$; VB=wfb$$
cleanup() { ip netns del $A 2>/dev/null || true; ip netns del $B 2>/dev/null || true; }
trap cleanup EXIT
ip netns add $A; ip netns add $B
ip link add $VA type veth peer name $VB
ip link set $VA netns $A; ip link set $VB netns $B
for ns in $A $B; do
  ip netns exec $ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip netns exec $ns ip link set lo up
done
ip netns exec $A ip addr add 10.99.0.1/24 dev $VA
ip netns exec $B ip addr add 10.99.0.2/24 dev $VB
ip netns exec $A ip link set $VA up; ip netns exec $B ip link set $VB up
ip netns exec $A ethtool -K $VA tx off >/dev/null; ip netns exec $B ethtool -K $VB tx off >/dev/null
sleep 1
cap() { # name, then the traffic command
  local name=$1; shift
  ip netns exec $A tcpdump -q -i $VA -s 0 -U -w "$OUT/$name.pcap" 2>/dev/null & local pid=$!
  sleep 1; "$@"; sleep 1; kill $pid; wait $pid || true
}
# 1. ping: ARP request/reply, two echo requests and replies.
cap ping ip netns exec $A ping -c 2 -i 0.3 10.99.0.2 >/dev/null
# 2. TCP: SYN (MSS, SACK-permitted, timestamps, window scale), data both ways, FIN, ACKs.
tcp() {
  ip netns exec $B socat -u TCP-LISTEN:5001,reuseaddr SYSTEM:'cat >/dev/null' &
  local srv=$!; sleep 0.5
  printf 'hello offload\n' | ip netns exec $A socat -u - TCP:10.99.0.2:5001
  wait $srv || true
}
cap tcp tcp
# 3. UDP: one datagram, then two whose payloads are RTP packets: V=2, M=1, PT=96, seq
#    0x1234, timestamp 0x11223344, SSRC 0xdeadbeef, one CSRC 0x01020304, payload "abcd";
#    and V=2 with padding and extension, PT=0, seq 1, timestamp 160, SSRC 0xdeadbeef,
#    extension profile 0xbede with one word 0x10203040, payload "xy", 2 bytes of padding.
udp() {
  ip netns exec $B socat -u UDP-RECV:5004 - >/dev/null & local srv=$!; sleep 0.5
  printf 'hello udp' | ip netns exec $A socat -u - UDP:10.99.0.2:5004,sourceport=40000
  printf '\x81\xe0\x12\x34\x11\x22\x33\x44\xde\xad\xbe\xef\x01\x02\x03\x04abcd' \
    | ip netns exec $A socat -u - UDP:10.99.0.2:5004,sourceport=40002
  printf '\xb0\x00\x00\x01\x00\x00\x00\xa0\xde\xad\xbe\xef\xbe\xde\x00\x01\x10\x20\x30\x40xy\x00\x02' \
    | ip netns exec $A socat -u - UDP:10.99.0.2:5004,sourceport=40002
  sleep 0.3; kill $srv 2>/dev/null || true; wait $srv 2>/dev/null || true
}
cap udp udp
# 4. UDP to a closed port: ICMP destination unreachable, port unreachable (code 3).
cap unreachable ip netns exec $A socat -u - UDP:10.99.0.2:5999,sourceport=40001 < <(printf 'nobody home')
# 5. The UDP capture again with nanosecond timestamps (nanosecond pcap magic).
tcpdump -r "$OUT/udp.pcap" --time-stamp-precision=nano -w "$OUT/udp-nano.pcap" 2>/dev/null
