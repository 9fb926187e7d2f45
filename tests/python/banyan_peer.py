#!/usr/bin/env python3
"""A python-banyan component used as a real peer by the integration tests.

It is built on python_banyan.banyan_base.BanyanBase (python-banyan 3.17 from
PyPI): the sockets, the connect delay, publish_payload and the payload decoding
are python-banyan's own.

Usage:
    banyan_peer.py pub       -b ADDR -p PUB_PORT -s SUB_PORT --topic T
    banyan_peer.py pub-numpy -b ADDR -p PUB_PORT -s SUB_PORT --topic T
    banyan_peer.py sub       -b ADDR -p PUB_PORT -s SUB_PORT --topic T [--topic T2 ...]
                             [--count N] [--numpy]
    banyan_peer.py echo      -b ADDR -p PUB_PORT -s SUB_PORT --topic IN --reply OUT
                             [--count N] [--numpy]
    common options: [-n NAME] [--no-probe]
    -b ADDR may be left out: python-banyan then finds the backplane itself (a
    process whose command line contains "backplane", at this machine's LAN
    address).

Modes:
    pub        Prints READY, then reads stdin until EOF, one MessagePack value per
               line written as hex; each value is unpacked with
               msgpack.unpackb(raw=False, strict_map_key=False) and published with
               publish_payload(value, T). Blank lines are skipped. Then prints
               "DONE <count>" and exits 0.
    pub-numpy  Component created with numpy=True. Prints READY, waits for one line
               on stdin (or EOF), publishes numpy.array([1, 2, 3], dtype=int64) and
               then numpy.array([[1.5, 2.5], [3.5, 4.5]]) on T, prints "DONE 2".
    sub        Subscribes to every --topic (ZeroMQ prefix match; '' = all), prints
               READY, then one line per message received (see below). With
               --count N it exits 0 after N messages.
    echo       Subscribes to IN, prints READY, and republishes the payload of every
               message whose topic is exactly IN on OUT with publish_payload (so it
               is decoded and re-encoded the way any python component would). It
               prints the same line as `sub` for each message it republishes.

Standard output carries only these lines (python-banyan's start-up banner is sent
to standard error), each flushed as soon as it is written:
    READY
    DONE <count>
    <topic>\t<hex>                  hex = msgpack.packb(payload, use_bin_type=True)
                                    of the payload python decoded
    <topic>\tndarray\t<dtype>\t<shape>\t<values>
                                    only with --numpy, for a payload that decoded to
                                    a numpy array: dtype is the array-protocol string
                                    (`<i8`, `<f8`), shape and values are compact JSON
                                    (`[2,2]`, `[[1.5,2.5],[3.5,4.5]]`)
With --numpy, numpy arrays nested inside other values are re-encoded in the
msgpack-numpy format on the hex line.

Readiness probe (disable with --no-probe): before printing READY the peer
subscribes to its own topic "banyan_peer_probe.<pid>" and publishes {"probe": <pid>}
on it, every 50 ms, until one comes back through the backplane (deadline 10 s).
Subscriptions travel in order on one connection, so once the probe is back the
subscriptions to the --topic values are in force at the backplane, and the publisher
is connected. Probe messages (of any peer) are never printed or echoed.

Decoding: outside --numpy the messages are read by BanyanBase.receive_loop itself.
With --numpy the peer reads BanyanBase's subscriber socket with the same decoding
steps as BanyanBase.receive_loop, with one deviation: a payload that is not a map
(for example a bare numpy array) is passed on as decoded, where python-banyan's
loop raises AttributeError ('numpy.ndarray' object has no attribute 'items').

Errors: any failure exits non-zero with one line on standard error. SIGTERM or
SIGINT closes the sockets and exits 0.
"""

import os
import signal

# Until main() installs its handlers: a SIGTERM during start-up (the imports below
# take a while) ends the process quietly with status 0.
signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import msgpack  # noqa: E402
import msgpack_numpy  # noqa: E402
import numpy  # noqa: E402
import zmq  # noqa: E402
from python_banyan.banyan_base import BanyanBase  # noqa: E402

PROBE_PREFIX = "banyan_peer_probe."
PROBE_DEADLINE_S = 10.0
PROBE_INTERVAL_S = 0.05
# BanyanBase.receive_loop sleeps this long when no message is waiting.
LOOP_TIME_S = 0.01
# How long closing waits for queued outgoing messages to reach the backplane.
PUBLISHER_LINGER_MS = 2000


class Terminated(BaseException):
    """Raised by the SIGTERM/SIGINT handler to leave any loop."""


class Finished(BaseException):
    """Raised when --count messages have been handled."""


class PeerError(Exception):
    """A failure reported on one line of standard error."""


def emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def describe(error):
    message = " ".join(str(error).split())
    return "%s: %s" % (type(error).__name__, message) if message else type(error).__name__


def compact_json(value):
    return json.dumps(value, separators=(",", ":"), default=str)


class Peer(BanyanBase):
    def __init__(self, args):
        self.args = args
        self.mode = args.mode
        self.handled = 0
        self.probe_topic = PROBE_PREFIX + str(os.getpid())
        # The banner BanyanBase prints goes to stderr: stdout is the line protocol.
        with contextlib.redirect_stdout(sys.stderr):
            super().__init__(
                back_plane_ip_address=args.back_plane_ip_address,
                subscriber_port=args.subscriber_port,
                publisher_port=args.publisher_port,
                process_name=args.process_name,
                loop_time=LOOP_TIME_S,
                numpy=args.numpy,
            )
        sys.stderr.flush()

    # ----------------------------------------------------------- readiness

    def probe(self):
        """Wait until a message of ours comes back through the backplane.

        Returns the non-probe messages that arrived meanwhile, undecoded.
        """
        self.set_subscriber_topic(self.probe_topic)
        poller = zmq.Poller()
        poller.register(self.subscriber, zmq.POLLIN)
        early = []
        deadline = time.monotonic() + PROBE_DEADLINE_S
        while True:
            self.publish_payload({"probe": os.getpid()}, self.probe_topic)
            until = min(time.monotonic() + PROBE_INTERVAL_S, deadline)
            while True:
                remaining = until - time.monotonic()
                if remaining <= 0 or not poller.poll(remaining * 1000):
                    break
                frames = self.subscriber.recv_multipart()
                if frames[0] == self.probe_topic.encode():
                    self.subscriber.setsockopt(zmq.UNSUBSCRIBE, self.probe_topic.encode())
                    return early
                if not frames[0].startswith(PROBE_PREFIX.encode()):
                    early.append(frames)
            if time.monotonic() >= deadline:
                raise PeerError(
                    "readiness probe: nothing came back within %g s from the backplane "
                    "at %s (publisher port %s, subscriber port %s); is a backplane running?"
                    % (PROBE_DEADLINE_S, self.back_plane_ip_address,
                       self.publisher_port, self.subscriber_port))

    def ready(self, subscribe):
        for topic in subscribe:
            self.set_subscriber_topic(topic)
        early = [] if self.args.no_probe else self.probe()
        emit("READY")
        for frames in early:
            self.incoming_message_processing(*self.decode_like_banyan_base(frames))

    # ----------------------------------------------------------- receiving

    def decode_like_banyan_base(self, frames):
        """Decode one message with the steps of BanyanBase.receive_loop (3.17)."""
        topic = frames[0].decode()
        if not self.numpy:
            return topic, msgpack.unpackb(frames[1], raw=False)
        payload = msgpack.unpackb(frames[1], object_hook=msgpack_numpy.decode)
        # BanyanBase calls payload.items() unconditionally; a non-map payload makes
        # its loop raise AttributeError. Such payloads are passed on here.
        if isinstance(payload, dict):
            payload2 = {}
            for key, value in payload.items():
                if not type(key) == str:
                    key = key.decode("utf-8")
                    payload2[key] = value
            if payload2:
                payload = payload2
        return topic, payload

    def run_receive(self):
        if not self.numpy:
            self.receive_loop()
            return
        while True:
            frames = self.subscriber.recv_multipart()
            self.incoming_message_processing(*self.decode_like_banyan_base(frames))

    def incoming_message_processing(self, topic, payload):
        if topic.startswith(PROBE_PREFIX):
            return
        if self.mode == "echo":
            if topic != self.args.topic[0]:
                return
            self.publish_payload(payload, self.args.reply)
        emit(self.format_line(topic, payload))
        self.handled += 1
        if self.args.count is not None and self.handled >= self.args.count:
            raise Finished()

    def format_line(self, topic, payload):
        if self.numpy and isinstance(payload, numpy.ndarray):
            return "\t".join([topic, "ndarray", payload.dtype.str,
                              compact_json(list(payload.shape)),
                              compact_json(payload.tolist())])
        # With numpy=True msgpack is patched by msgpack_numpy, so arrays nested in
        # the payload are encoded in the msgpack-numpy format here.
        return topic + "\t" + msgpack.packb(payload, use_bin_type=True).hex()

    # ----------------------------------------------------------- modes

    def run(self):
        topics = self.args.topic
        if self.mode == "pub":
            self.ready([])
            count = 0
            for number, line in enumerate(sys.stdin, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    value = msgpack.unpackb(bytes.fromhex(line), raw=False,
                                            strict_map_key=False)
                except Exception as error:
                    raise PeerError("stdin line %d is not the hex of one MessagePack "
                                    "value: %s" % (number, describe(error)))
                self.publish_payload(value, topics[0])
                count += 1
            return count
        if self.mode == "pub-numpy":
            self.ready([])
            sys.stdin.readline()
            self.publish_payload(numpy.array([1, 2, 3], dtype=numpy.int64), topics[0])
            self.publish_payload(numpy.array([[1.5, 2.5], [3.5, 4.5]]), topics[0])
            return 2
        # sub, echo
        self.ready(topics)
        if self.args.count is not None and self.args.count <= 0:
            return None
        try:
            self.run_receive()
        except Finished:
            pass
        return None

    def close(self):
        self.publisher.setsockopt(zmq.LINGER, PUBLISHER_LINGER_MS)
        self.subscriber.setsockopt(zmq.LINGER, 0)
        self.clean_up()


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, "banyan_peer: %s (see --help)\n" % message)


def parse_args(argv):
    parser = OneLineParser(
        prog="banyan_peer.py",
        description="A python-banyan (BanyanBase) component for integration tests.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Usage:", 1)[1])
    parser.add_argument("mode", choices=["pub", "pub-numpy", "sub", "echo"])
    parser.add_argument("-b", dest="back_plane_ip_address", default=None,
                        help="backplane IP address (tests use 127.0.0.1; default: "
                             "python-banyan's own discovery)")
    parser.add_argument("-p", dest="publisher_port", required=True,
                        help="backplane publisher port (components' PUB connect here)")
    parser.add_argument("-s", dest="subscriber_port", required=True,
                        help="backplane subscriber port (components' SUB connect here)")
    parser.add_argument("-n", dest="process_name", default=None,
                        help="name shown in the banner (default: banyan_peer MODE)")
    parser.add_argument("--topic", action="append", default=[],
                        help="topic to publish on (pub, pub-numpy), subscribe to (sub, "
                             "repeatable) or echo from (echo)")
    parser.add_argument("--reply", help="echo: topic the payloads are republished on")
    parser.add_argument("--count", type=int, help="sub, echo: exit 0 after N messages")
    parser.add_argument("--numpy", action="store_true",
                        help="sub, echo: create the component with numpy=True")
    parser.add_argument("--no-probe", action="store_true",
                        help="print READY without the readiness probe")
    args = parser.parse_args(argv)
    if args.process_name is None:
        args.process_name = "banyan_peer " + args.mode
    for port in (args.publisher_port, args.subscriber_port):
        if not port.isdigit():
            parser.error("ports must be numbers, got %r" % port)
    if args.mode in ("pub", "pub-numpy", "echo") and len(args.topic) != 1:
        parser.error("%s needs exactly one --topic" % args.mode)
    if args.mode == "sub" and not args.topic:
        parser.error("sub needs at least one --topic ('' subscribes to everything)")
    if args.mode == "echo":
        if args.reply is None:
            parser.error("echo needs --reply OUT")
        if args.reply == args.topic[0]:
            parser.error("echo: --reply must differ from --topic")
    elif args.reply is not None:
        parser.error("--reply applies to echo only")
    if args.mode in ("pub", "pub-numpy") and args.count is not None:
        parser.error("--count applies to sub and echo only")
    if args.mode == "pub" and args.numpy:
        parser.error("--numpy applies to sub and echo (pub-numpy is always numpy=True)")
    if args.mode == "pub-numpy":
        args.numpy = True
    return args


def main(argv):
    args = parse_args(argv)

    def on_signal(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    peer = None
    status = 0
    try:
        peer = Peer(args)
        count = peer.run()
        if count is not None:
            # Close first so that the messages have left before DONE is printed.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            peer.close()
            peer = None
            emit("DONE %d" % count)
    except Terminated:
        status = 0
    except PeerError as error:
        sys.stderr.write("banyan_peer %s: %s\n" % (args.mode, error))
        status = 1
    except Exception as error:
        sys.stderr.write("banyan_peer %s: %s\n" % (args.mode, describe(error)))
        status = 1
    finally:
        if peer is not None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                peer.close()
            except Exception as error:
                sys.stderr.write("banyan_peer %s: closing: %s\n" % (args.mode, describe(error)))
                status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
