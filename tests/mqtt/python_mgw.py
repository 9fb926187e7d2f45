#!/usr/bin/env python3
"""python-banyan 3.17's own MQTT gateway, run as the reference for how it
matches bus topics (tests/mqtt.rs).

Usage: python_mgw.py PUBLISHER_PORT SUBSCRIBER_PORT BROKER_PORT

Its defaults otherwise: bus to_mqtt -> MQTT from_banyan, MQTT mqtt_network
-> bus from_mqtt. It prints "... Connected to MQTT ..." once the broker
accepted it. The class is called directly because python's `mgw` command line
cannot reach this test's bus and broker: it drops -b (its option dictionary is
built twice) and passes -d to paho as a string, which paho refuses.
"""

import sys

from python_banyan.utils.mqtt_gateway.mqtt_gateway import MqttGateway


def main(argv):
    publisher_port, subscriber_port, broker_port = argv
    MqttGateway(
        back_plane_ip_address="127.0.0.1",
        publisher_port=publisher_port,
        subscriber_port=subscriber_port,
        mqtt_addr="127.0.0.1",
        mqtt_port=int(broker_port),
        mqtt_sub_topics="mqtt_network",
    )


if __name__ == "__main__":
    main(sys.argv[1:])
