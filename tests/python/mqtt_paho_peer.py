#!/usr/bin/env python3
"""A paho-mqtt (1.6) client used as a real MQTT peer by the integration tests.

Usage:
    mqtt_paho_peer.py sub --port P --topic T [--count N]
    mqtt_paho_peer.py pub --port P --topic T

Modes:
    sub   Connects to 127.0.0.1:P, subscribes to T (QoS 0), prints READY once
          the broker acknowledged, then one line per message: the payload
          decoded as UTF-8. Exits 0 after N messages (default 1).
    pub   Connects, prints READY, then publishes every non-blank stdin line as
          a payload on T (QoS 1, waiting for each acknowledgement) and prints
          "DONE <count>" at end of input.

Errors exit non-zero with one line on standard error.
"""

import argparse
import sys
import threading

import paho.mqtt.client as mqtt

DEADLINE_S = 15


def emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv):
    parser = argparse.ArgumentParser(prog="mqtt_paho_peer.py")
    parser.add_argument("mode", choices=["sub", "pub"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, default=1)
    args = parser.parse_args(argv)

    client = mqtt.Client()
    ready = threading.Event()
    finished = threading.Event()
    received = [0]

    def on_connect(client, userdata, flags, rc):
        if rc != 0:
            sys.stderr.write("mqtt_paho_peer: connection refused: %d\n" % rc)
            finished.set()
            return
        if args.mode == "sub":
            client.subscribe(args.topic)
        else:
            ready.set()

    def on_subscribe(client, userdata, mid, granted_qos):
        ready.set()

    def on_message(client, userdata, message):
        emit(message.payload.decode("utf-8"))
        received[0] += 1
        if received[0] >= args.count:
            finished.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", args.port, 60)
    client.loop_start()
    if not ready.wait(DEADLINE_S):
        sys.stderr.write("mqtt_paho_peer: not ready within %d s\n" % DEADLINE_S)
        return 1
    emit("READY")
    if args.mode == "sub":
        finished.wait()
    else:
        count = 0
        for line in sys.stdin:
            line = line.strip()
            if line:
                client.publish(args.topic, line, qos=1).wait_for_publish()
                count += 1
        emit("DONE %d" % count)
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
