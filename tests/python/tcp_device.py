#!/usr/bin/env python3
"""A device as existing MicroPython scripts write it, for the tgw interop test.

It is a TCP server speaking python-banyan's tgw framing: every frame is one
length byte followed by that many bytes of MessagePack. The socket code sticks
to what MicroPython's `socket` module offers (bind, listen, accept, recv,
sendall), with `msgpack` standing in for MicroPython's `umsgpack`.

Usage: tcp_device.py
Prints "LISTENING <port>" (a free port of 127.0.0.1), accepts one connection,
prints "CONNECTED", then:
  - for each frame received prints "GOT <hex>", hex = msgpack.packb of the
    decoded value;
  - for each stdin line of hex (one MessagePack value), sends it as a frame.
Exits 0 when the gateway closes the connection (printing "CLOSED") or stdin
ends.
"""

import socket
import sys
import threading

import msgpack


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def receive(sock):
    while True:
        length = recv_exactly(sock, 1)
        if length is None:
            break
        packet = recv_exactly(sock, length[0])
        if packet is None:
            break
        value = msgpack.unpackb(packet, raw=False)
        print("GOT " + msgpack.packb(value, use_bin_type=True).hex(), flush=True)
    print("CLOSED", flush=True)


def main():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    print("LISTENING %d" % server.getsockname()[1], flush=True)
    client, _ = server.accept()
    print("CONNECTED", flush=True)
    reader = threading.Thread(target=receive, args=(client,), daemon=True)
    reader.start()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        packed = bytes.fromhex(line)
        # The framing of python-banyan's byte_play.py: one length byte first.
        client.sendall(bytes([len(packed)]) + packed)
    reader.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
