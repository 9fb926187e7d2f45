#!/usr/bin/env python3
"""A stand-in for one of s3-extend's hardware gateways (ardgw, espgw, rpigw,
cpxgw, pbgw, esp32gw, rhgw, rpgw), so that an s3-extend launcher (s3a, s3e, ...)
runs as it does in a classroom, with no board attached.

The launcher starts its hardware gateway by name from PATH; the tests put a
script of that name first on PATH which runs this file with --board NAME. Like
s3-extend's gateways, it is a python-banyan component (python_banyan.banyan_base
from the s3-extend virtual environment), subscribed to the board's command topic
(to_arduino_gateway, ...), publishing OneGPIO reports on the board's report topic
(from_arduino_gateway, ...), and connected to the backplane at 127.0.0.1.

Usage: s3_standin.py --board arduino|esp8266|rpi|cpx|picoboard|esp32|robohat|rpi_pico
       [any other arguments the launcher passes, ignored]
The environment variable BANYAN_S3_PROBE names a Unix socket the test listens on
(the probe channel, reachable from inside the test's private network namespace).

Probe channel, one line each way per event, flushed at once:
    stand-in -> test:  ready <command topic> <report topic>
                           once its subscription is in force at the backplane
                           (a readiness probe on its own topic came back)
                       command <JSON>
                           every message received on the command topic
    test -> stand-in:  panic
                           publish {"report": "panic"} on the report topic, as a
                           gateway whose board is gone

Answers to OneGPIO commands (what a board would report at once):
    set_mode_digital_input(_pullup) {pin}  -> {"report": "digital_input", "pin", "value": 1, "timestamp"}
    set_mode_analog_input {pin}            -> {"report": "analog_input", "pin", "value": 512, "timestamp"}
    set_mode_sonar {trigger_pin}           -> {"report": "sonar_data", "value": 33, "timestamp"}
Other commands are only recorded. Errors exit non-zero with one line on stderr.
"""

import os
import signal

signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))

import argparse  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import msgpack  # noqa: E402
import zmq  # noqa: E402
from python_banyan.banyan_base import BanyanBase  # noqa: E402

PROBE_DEADLINE = 10.0

# The topics of s3-extend 1.35's gateways (picoboard's gateway publishes only;
# its page's id is to_picoboard_gateway all the same).
BOARDS = {
    name: ("to_" + name + "_gateway", "from_" + name + "_gateway")
    for name in ["arduino", "esp8266", "rpi", "cpx", "picoboard", "esp32", "robohat", "rpi_pico"]
}


class StandIn(BanyanBase):
    def __init__(self, board, probe):
        self.commands, self.reports = BOARDS[board]
        self.probe_socket = probe
        super().__init__(back_plane_ip_address="127.0.0.1", process_name=board + " stand-in")
        self.set_subscriber_topic(self.commands)

    def tell(self, line):
        self.probe_socket.sendall((line + "\n").encode())

    def wait_until_routed(self):
        """Publishes on a topic of its own until it comes back: then its
        subscriptions are in force at the backplane."""
        topic = "s3_standin_probe.%d" % os.getpid()
        self.set_subscriber_topic(topic)
        deadline = time.monotonic() + PROBE_DEADLINE
        while time.monotonic() < deadline:
            self.publish_payload({"probe": os.getpid()}, topic)
            if self.subscriber.poll(50):
                frames = self.subscriber.recv_multipart()
                if frames[0] == topic.encode():
                    self.subscriber.setsockopt(zmq.UNSUBSCRIBE, topic.encode())
                    return
                self.handle(frames)
        sys.exit("s3_standin: nothing came back from the backplane within %g s" % PROBE_DEADLINE)

    def handle(self, frames):
        topic = frames[0].decode()
        if topic != self.commands:
            return
        payload = msgpack.unpackb(frames[1], raw=False)
        self.tell("command " + json.dumps(payload, sort_keys=True))
        command = payload.get("command") if isinstance(payload, dict) else None
        now = time.time()
        if command in ("set_mode_digital_input", "set_mode_digital_input_pullup"):
            report = {"report": "digital_input", "pin": payload["pin"], "value": 1, "timestamp": now}
        elif command == "set_mode_analog_input":
            report = {"report": "analog_input", "pin": payload["pin"], "value": 512, "timestamp": now}
        elif command == "set_mode_sonar":
            report = {"report": "sonar_data", "value": 33, "timestamp": now}
        else:
            return
        self.publish_payload(report, self.reports)

    def run(self):
        self.wait_until_routed()
        self.tell("ready %s %s" % (self.commands, self.reports))
        poller = zmq.Poller()
        poller.register(self.subscriber, zmq.POLLIN)
        poller.register(self.probe_socket.fileno(), zmq.POLLIN)
        pending = b""
        while True:
            for item, _ in poller.poll():
                if item is self.subscriber:
                    self.handle(self.subscriber.recv_multipart())
                    continue
                data = self.probe_socket.recv(4096)
                if not data:
                    return
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip() == b"panic":
                        self.publish_payload({"report": "panic"}, self.reports)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--board", required=True, choices=sorted(BOARDS))
    args, _launcher_args = parser.parse_known_args()
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.connect(os.environ["BANYAN_S3_PROBE"])
    StandIn(args.board, probe).run()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # one line on stderr, non-zero exit
        sys.exit("s3_standin: %s: %s" % (type(e).__name__, e))
