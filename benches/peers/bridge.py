#!/usr/bin/env python3
"""A straightforward MQTT -> Kafka bridge: what a user might put between Mosquitto and Kafka
instead of firewatch. It is the "peer" of the whole-path comparison in benches/run.sh.

What it does: subscribes (QoS 1) to the gateways' uplink topics fw/v1/gw/+/up on an MQTT
broker and produces every message unchanged (the protobuf UplinkBatch) to one Kafka topic,
keyed by the gateway id taken from the MQTT topic. It does no decoding, no validation, no
deduplication and no application-level ack: paho acknowledges each MQTT message (PUBACK) as
soon as it is received, before Kafka has it, so a bridge crash loses what was in its memory.
The producer uses acks=all, enable.idempotence=true and linger.ms=5, like the engine's sink.

Run it (pip install paho-mqtt confluent-kafka):

    python3 benches/peers/bridge.py --mqtt-port 1883 --brokers 127.0.0.1:9092 \
        --topic bridge.uplinks --partitions 12

It creates the topic when missing (tansu does not auto-create topics), prints "bridge
ready" on stdout once subscribed, a counter line on stderr every 10 s, and flushes the
producer on SIGTERM/SIGINT before exiting.
"""

import argparse
import signal
import sys
import time

import paho.mqtt.client as mqtt
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

UPLINK_FILTER = "fw/v1/gw/+/up"


def parse_args():
    p = argparse.ArgumentParser(description="MQTT (fw/v1/gw/+/up) to Kafka bridge")
    p.add_argument("--mqtt-host", default="127.0.0.1")
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--brokers", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    p.add_argument("--topic", default="bridge.uplinks", help="Kafka topic to produce to")
    p.add_argument("--partitions", type=int, default=12, help="partitions if created")
    return p.parse_args()


def ensure_topic(brokers, topic, partitions):
    """Creates the topic unless it exists."""
    admin = AdminClient({"bootstrap.servers": brokers})
    existing = admin.list_topics(timeout=15).topics
    if topic in existing:
        return
    futures = admin.create_topics([NewTopic(topic, partitions, 1)])
    for name, fut in futures.items():
        try:
            fut.result(timeout=15)
        except KafkaException as e:
            # Someone else may have created it meanwhile.
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise
    # Wait until the topic shows up in the metadata.
    deadline = time.time() + 15
    while topic not in admin.list_topics(timeout=5).topics:
        if time.time() > deadline:
            sys.exit(f"bridge: topic {topic} did not appear")
        time.sleep(0.2)


def main():
    args = parse_args()
    ensure_topic(args.brokers, args.topic, args.partitions)

    producer = Producer(
        {
            "bootstrap.servers": args.brokers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "queue.buffering.max.messages": 1000000,
        }
    )
    stats = {"received": 0, "produced": 0, "failed": 0}

    def delivered(err, _msg):
        if err is None:
            stats["produced"] += 1
        else:
            stats["failed"] += 1

    def on_connect(client, _userdata, _flags, reason_code, _properties):
        if reason_code.is_failure:
            sys.exit(f"bridge: MQTT connect refused: {reason_code}")
        client.subscribe(UPLINK_FILTER, qos=1)

    def on_subscribe(_client, _userdata, _mid, reason_codes, _properties):
        if any(rc.is_failure for rc in reason_codes):
            sys.exit(f"bridge: subscription to {UPLINK_FILTER} refused")
        print("bridge ready", flush=True)

    def on_message(_client, _userdata, msg):
        stats["received"] += 1
        # fw/v1/gw/{gateway}/up
        parts = msg.topic.split("/")
        key = parts[3] if len(parts) > 3 else ""
        while True:
            try:
                producer.produce(args.topic, value=msg.payload, key=key, on_delivery=delivered)
                break
            except BufferError:
                # The producer's queue is full: serve delivery reports, then retry.
                producer.poll(0.05)
        producer.poll(0)

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="fw-bridge", clean_session=True
    )
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.max_inflight_messages_set(1000)
    client.connect(args.mqtt_host, args.mqtt_port, keepalive=30)

    running = {"on": True}

    def stop(_signum, _frame):
        running["on"] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    last = time.time()
    while running["on"]:
        client.loop(timeout=0.05)
        producer.poll(0)
        if time.time() - last >= 10:
            last = time.time()
            print(f"bridge: {stats}", file=sys.stderr, flush=True)
    client.disconnect()
    producer.flush(10)
    print(f"bridge: stopped {stats}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
