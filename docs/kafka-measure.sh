#!/bin/bash
# docs/kafka-measure.sh: measures the Kafka sink against tansu (memory) with the release loadgen on this machine.
set -u
cd /work/main
D=$(mktemp -d)
PORT=19092
~/.cargo/bin/tansu broker --listener-url tcp://127.0.0.1:$PORT --advertised-listener-url tcp://127.0.0.1:$PORT --storage-engine memory://tansu/ >$D/tansu.log 2>&1 &
TP=$!
sleep 2
FIREWATCH__DATA_DIR=$D/data FIREWATCH__SINK__KIND=kafka FIREWATCH__KAFKA__BROKERS=127.0.0.1:$PORT FIREWATCH__KAFKA__PARTITIONS=3 FIREWATCH__KAFKA__CONSUME_COMMANDS=false \
  FIREWATCH__MQTT__LISTEN_V4=127.0.0.1:11883 FIREWATCH__MQTT__LISTEN_V5=127.0.0.1:11884 FIREWATCH__HTTP__LISTEN=127.0.0.1:19900 \
  RUST_LOG=warn target/release/firewatch run >$D/engine.log 2>&1 &
EP=$!
for i in $(seq 60); do curl -sf 127.0.0.1:19900/readyz >/dev/null && break; sleep 1; done
timeout 300 target/release/loadgen --port 11883 --scenario steady "$@" --engine-pid $EP --metrics-url http://127.0.0.1:19900/metrics --no-progress --markdown $D/report.md
echo "rc=$?"
cat $D/report.md
curl -s 127.0.0.1:19900/metrics | grep -E "^firewatch_sink_(records_total|spool_state|refused)" 
kill $EP; wait $EP; kill $TP
