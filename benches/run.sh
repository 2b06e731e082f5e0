#!/usr/bin/env bash
# The scripted benchmark run (issue 5): builds release, generates a registry, and runs the
# loadgen scenarios at a fixed size against
#   1. firewatch (embedded log, fsync'd, app-level acks): steady, storm, outage, nuisance,
#      bad and peak (steady at a high rate with big batches);
#   2. Mosquitto (Debian's, persistence off, on loopback) with the same schedule and seed,
#      acked by PUBACK, observed by an MQTT subscriber: the MQTT ingest comparison;
#   3. the whole path into one tansu broker: firewatch with its Kafka sink (observed on
#      fw.alarms) against Mosquitto + benches/peers/bridge.py (observed on the bridge topic);
# then writes BENCHMARKS.md (machine, tables, ratios, the commands) from the JSON reports.
#
# Usage:
#   SIZE=small benches/run.sh            # smoke size, a few minutes
#   SIZE=city  benches/run.sh            # 800,000 points, device-class heartbeats
#   SIZE=city10x GATEWAYS=10000 benches/run.sh
# Knobs (environment): SIZE (small|city|city10x), POINTS, GATEWAYS, DURATION, WARMUP,
#   SCENARIOS (firewatch scenarios), PEER_SCENARIOS (Mosquitto comparison), KAFKA_SCENARIOS
#   (whole path; empty to skip), OUT (result directory), BENCH_MD (file written, default
#   BENCHMARKS.md; "-" for none), NO_BUILD=1 (use the binaries in target/release),
#   PORT_BASE, SEED, LABEL (a note put in the title, e.g. "smoke run").
# Needs: cargo, /usr/sbin/mosquitto, tansu (~/.cargo/bin), python3 with paho-mqtt and
# confluent-kafka, curl. Every process it starts is killed when it exits.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

SIZE=${SIZE:-small}
SEED=${SEED:-42}
PORT_BASE=${PORT_BASE:-21880}
case "$SIZE" in
small)
    POINTS=${POINTS:-2000}
    DURATION=${DURATION:-8}
    WARMUP=${WARMUP:-1}
    HB_ARGS=${HB_ARGS:---rate 2000}
    STORM_ARGS=${STORM_ARGS:---storm-at 2 --storm-secs 3 --storm-rate 300 --fire-spread-secs 3}
    OUTAGE_ARGS=${OUTAGE_ARGS:---outage-at 2 --outage-secs 2 --outage-share 0.2}
    PEAK_ARGS=${PEAK_ARGS:---rate 20000 --batch 500}
    ;;
city | city10x)
    if [ "$SIZE" = city ]; then POINTS=${POINTS:-800000}; else POINTS=${POINTS:-8000000}; fi
    DURATION=${DURATION:-60}
    WARMUP=${WARMUP:-10}
    HB_ARGS=${HB_ARGS:---heartbeat-from-class}
    STORM_ARGS=${STORM_ARGS:---storm-at 20 --storm-secs 10 --storm-rate 1000}
    OUTAGE_ARGS=${OUTAGE_ARGS:---outage-at 20 --outage-secs 10 --outage-share 0.2}
    PEAK_ARGS=${PEAK_ARGS:---rate 1000000 --batch 1000}
    ;;
*)
    echo "run.sh: unknown SIZE $SIZE (small, city, city10x)" >&2
    exit 2
    ;;
esac
GATEWAYS=${GATEWAYS:-}
SCENARIOS=${SCENARIOS:-steady storm outage nuisance bad peak}
PEER_SCENARIOS=${PEER_SCENARIOS:-steady storm peak}
KAFKA_SCENARIOS=${KAFKA_SCENARIOS-storm}
OUT=${OUT:-$ROOT/target/bench/$SIZE-$(date -u +%Y%m%dT%H%M%SZ)}
BENCH_MD=${BENCH_MD:-$ROOT/BENCHMARKS.md}
LABEL=${LABEL:-}
DRAIN=${DRAIN:-10}
# Wall-clock limit of one loadgen run: connect + schedule + drain + checks, generously.
RUN_LIMIT=$((${DURATION%.*} + DRAIN + 120 + ${POINTS} / 5000))

FW_MQTT=$PORT_BASE
FW_MQTT5=$((PORT_BASE + 1))
FW_HTTP=$((PORT_BASE + 2))
MQ_PORT=$((PORT_BASE + 10))
KAFKA_PORT=$((PORT_BASE + 20))
BRIDGE_TOPIC=bridge.uplinks

FIREWATCH=$ROOT/target/release/firewatch
LOADGEN=$ROOT/target/release/loadgen
TANSU=${TANSU:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
MOSQUITTO=${MOSQUITTO:-/usr/sbin/mosquitto}

mkdir -p "$OUT"/{reports,logs}
COMMANDS=$OUT/commands.txt
: >"$COMMANDS"

# --- process bookkeeping: everything started in the background is killed on exit --------
PIDS=()
# A background process and its program (the child of its `timeout`), by pid.
family() {
    echo "$1"
    pgrep -P "$1" 2>/dev/null || true
}
cleanup() {
    local p all=()
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && all+=($(family "$p"))
    done
    for p in "${all[@]:-}"; do
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
    done
    sleep 1
    for p in "${all[@]:-}"; do
        [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "run.sh: $*" >&2; }
note() { echo "$*" >>"$COMMANDS"; }

# Starts "$@" in the background under a timeout; sets BG_PID (the timeout process).
start_bg() {
    local logfile=$1
    shift
    timeout --kill-after=5 3600 "$@" >"$logfile" 2>&1 &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

# The pid of the program a `timeout` process runs.
child_of() {
    local i
    for i in $(seq 50); do
        local c
        c=$(pgrep -P "$1" | head -1 || true)
        [ -n "$c" ] && { echo "$c"; return; }
        sleep 0.1
    done
    echo "$1"
}

# Stops a background process and its program (TERM, then KILL after 20 s).
stop_bg() {
    local pids i
    pids=$(family "$1")
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || return 0
    for i in $(seq 200); do
        # shellcheck disable=SC2086
        kill -0 $pids 2>/dev/null || return 0
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
}

wait_port() {
    local port=$1 what=$2 i
    for i in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    log "$what did not listen on port $port"
    return 1
}

wait_http() {
    local url=$1 i
    for i in $(seq 600); do
        curl -fsS -m 2 "$url" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "no answer from $url"
    return 1
}

# --- the machine -----------------------------------------------------------------------
CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)
NPROC=$(nproc)
RAM_GB=$(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)
KERNEL=$(uname -r)
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (working tree modified)" || true)
MOSQ_VERSION=$("$MOSQUITTO" -h 2>/dev/null | head -1 || echo mosquitto)
TANSU_VERSION=$("$TANSU" --version 2>/dev/null | head -1 || echo tansu)
cat >"$OUT/machine.env" <<EOF
SIZE=$SIZE
NPROC=$NPROC
CPU_MODEL=$CPU_MODEL
RAM_GB=$RAM_GB
KERNEL=$KERNEL
DATE=$DATE
COMMIT=$COMMIT$DIRTY
MOSQ_VERSION=$MOSQ_VERSION
TANSU_VERSION=$TANSU_VERSION
LABEL=$LABEL
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
EOF
log "size $SIZE: $POINTS points, ${DURATION} s; $NPROC cores ($CPU_MODEL); results in $OUT"

# --- build and registry ------------------------------------------------------------------
if [ "${NO_BUILD:-0}" = 1 ]; then
    note "# NO_BUILD=1: the binaries of an earlier cargo build --release --bin firewatch; cargo build --release -p loadgen"
else
    note "cargo build --release --bin firewatch && cargo build --release -p loadgen"
    timeout 3600 cargo build --release --bin firewatch
    timeout 3600 cargo build --release -p loadgen
fi
[ -x "$FIREWATCH" ] && [ -x "$LOADGEN" ] || { log "missing $FIREWATCH or $LOADGEN"; exit 1; }

REG=$OUT/registry
mkdir -p "$REG"
note "target/release/firewatch registry generate --points $POINTS --out $REG/registry.csv --credentials $REG/credentials.csv"
timeout 600 "$FIREWATCH" registry generate --points "$POINTS" \
    --out "$REG/registry.csv" --credentials "$REG/credentials.csv" >&2

LOADGEN_COMMON=(--registry "$REG/registry.csv" --duration "$DURATION" --warmup "$WARMUP"
    --drain-secs "$DRAIN" --seed "$SEED" --no-progress)
[ -n "$GATEWAYS" ] && LOADGEN_COMMON+=(--gateways "$GATEWAYS")

# The options of a scenario (peak is steady at a high rate with big batches).
scenario_args() {
    case "$1" in
    steady) echo "--scenario steady $HB_ARGS" ;;
    storm) echo "--scenario storm $HB_ARGS $STORM_ARGS" ;;
    outage) echo "--scenario outage $HB_ARGS $OUTAGE_ARGS" ;;
    nuisance) echo "--scenario nuisance $HB_ARGS" ;;
    bad) echo "--scenario bad $HB_ARGS" ;;
    peak) echo "--scenario steady $PEAK_ARGS" ;;
    *) log "unknown scenario $1"; return 1 ;;
    esac
}

# --- the engine --------------------------------------------------------------------------
ENGINE_PID=
ENGINE_TPID=
# start_engine NAME [ENV=VALUE ...]: a fresh engine with its own data directory.
start_engine() {
    local name=$1
    shift
    local data=$OUT/data/$name
    rm -rf "$data"
    mkdir -p "$data"
    local envs=(FIREWATCH__DATA_DIR="$data"
        FIREWATCH__MQTT__LISTEN_V4=127.0.0.1:$FW_MQTT
        FIREWATCH__MQTT__LISTEN_V5=127.0.0.1:$FW_MQTT5
        FIREWATCH__HTTP__LISTEN=127.0.0.1:$FW_HTTP
        FIREWATCH__REGISTRY__PATH="$REG/registry.csv"
        FIREWATCH__MQTT__CREDENTIALS="$REG/credentials.csv"
        "$@")
    note "env ${envs[*]} target/release/firewatch run"
    start_bg "$OUT/logs/engine-$name.log" env "${envs[@]}" "$FIREWATCH" run
    ENGINE_TPID=$BG_PID
    ENGINE_PID=$(child_of "$ENGINE_TPID")
    # env execs firewatch, so the child of timeout is the engine itself.
    wait_http "http://127.0.0.1:$FW_HTTP/readyz" || { tail -20 "$OUT/logs/engine-$name.log" >&2; return 1; }
}

stop_engine() {
    [ -n "$ENGINE_TPID" ] && stop_bg "$ENGINE_TPID"
    ENGINE_TPID=
    ENGINE_PID=
}

# run_loadgen NAME ARGS...: one loadgen run writing NAME.{json,md,svg}; never fails the
# script (a failed run is reported as such in the tables).
run_loadgen() {
    local name=$1
    shift
    local r=$OUT/reports/$name
    note "target/release/loadgen $* ${LOADGEN_COMMON[*]} --json $r.json --markdown $r.md --plot $r.svg"
    log "loadgen $name"
    set +e
    timeout --kill-after=10 "$RUN_LIMIT" "$LOADGEN" "$@" "${LOADGEN_COMMON[@]}" \
        --json "$r.json" --markdown "$r.md" --plot "$r.svg" >"$OUT/logs/loadgen-$name.log" 2>&1
    local rc=$?
    set -e
    echo "$rc" >"$r.rc"
    tail -4 "$OUT/logs/loadgen-$name.log" | sed 's/^/    /' >&2
}

# --- 1. firewatch, embedded log ----------------------------------------------------------
for s in $SCENARIOS; do
    start_engine "fw-$s"
    # shellcheck disable=SC2046
    run_loadgen "fw-$s" $(scenario_args "$s") --port "$FW_MQTT" --label firewatch \
        --log-dir "$OUT/data/fw-$s/log" --engine-pid "$ENGINE_PID" \
        --metrics-url "http://127.0.0.1:$FW_HTTP/metrics"
    stop_engine
done

# --- 2. Mosquitto ------------------------------------------------------------------------
MQ_PID=
MQ_TPID=
start_mosquitto() {
    cat >"$OUT/mosquitto.conf" <<EOF
# Generated by benches/run.sh: in memory only, anonymous, loopback.
per_listener_settings false
allow_anonymous true
persistence false
# Let the observing subscriber queue (the defaults, 1000 queued and 20 in flight per
# client, would drop QoS-1 messages to a subscriber that falls behind).
max_queued_messages 1000000
max_inflight_messages 1000
log_dest stderr
log_type error
log_type warning
listener $MQ_PORT 127.0.0.1
EOF
    note "$MOSQUITTO -c $OUT/mosquitto.conf"
    start_bg "$OUT/logs/mosquitto-$1.log" "$MOSQUITTO" -c "$OUT/mosquitto.conf"
    MQ_TPID=$BG_PID
    MQ_PID=$(child_of "$MQ_TPID")
    wait_port "$MQ_PORT" mosquitto
}
stop_mosquitto() {
    [ -n "$MQ_TPID" ] && stop_bg "$MQ_TPID"
    MQ_TPID=
    MQ_PID=
}

if [ -x "$MOSQUITTO" ]; then
    for s in $PEER_SCENARIOS; do
        start_mosquitto "$s"
        # shellcheck disable=SC2046
        run_loadgen "mq-$s" $(scenario_args "$s") --port "$MQ_PORT" --label mosquitto \
            --ack puback --observe-mqtt --engine-pid "$MQ_PID"
        stop_mosquitto
    done
else
    log "no $MOSQUITTO: skipping the Mosquitto comparison"
fi

# --- 3. the whole path through Kafka (tansu) ---------------------------------------------
TANSU_TPID=
start_tansu() {
    note "$TANSU broker --listener-url tcp://127.0.0.1:$KAFKA_PORT --advertised-listener-url tcp://127.0.0.1:$KAFKA_PORT --storage-engine memory://tansu/"
    start_bg "$OUT/logs/tansu-$1.log" "$TANSU" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine memory://tansu/
    TANSU_TPID=$BG_PID
    wait_port "$KAFKA_PORT" tansu
}
stop_tansu() {
    [ -n "$TANSU_TPID" ] && stop_bg "$TANSU_TPID"
    TANSU_TPID=
}

if [ -n "$KAFKA_SCENARIOS" ] && [ -x "$TANSU" ]; then
    for s in $KAFKA_SCENARIOS; do
        # firewatch with its Kafka sink (a fresh tansu per side: same empty broker).
        start_tansu "fwk-$s"
        start_engine "fwk-$s" FIREWATCH__SINK__KIND=kafka \
            FIREWATCH__KAFKA__BROKERS=127.0.0.1:$KAFKA_PORT FIREWATCH__KAFKA__PARTITIONS=12
        # shellcheck disable=SC2046
        run_loadgen "fwk-$s" $(scenario_args "$s") --port "$FW_MQTT" --label "firewatch+kafka" \
            --kafka-brokers "127.0.0.1:$KAFKA_PORT" --kafka-topic fw.alarms \
            --kafka-value alarm-record --engine-pid "$ENGINE_PID" \
            --metrics-url "http://127.0.0.1:$FW_HTTP/metrics"
        stop_engine
        stop_tansu

        # Mosquitto + the bridge.
        if [ -x "$MOSQUITTO" ] && python3 -c 'import paho.mqtt, confluent_kafka' 2>/dev/null; then
            start_tansu "br-$s"
            start_mosquitto "br-$s"
            note "python3 benches/peers/bridge.py --mqtt-port $MQ_PORT --brokers 127.0.0.1:$KAFKA_PORT --topic $BRIDGE_TOPIC --partitions 12"
            start_bg "$OUT/logs/bridge-$s.log" python3 -u benches/peers/bridge.py \
                --mqtt-port "$MQ_PORT" --brokers "127.0.0.1:$KAFKA_PORT" \
                --topic "$BRIDGE_TOPIC" --partitions 12
            BRIDGE_TPID=$BG_PID
            BRIDGE_PID=$(child_of "$BRIDGE_TPID")
            ready=0
            for _ in $(seq 300); do
                grep -q "bridge ready" "$OUT/logs/bridge-$s.log" && { ready=1; break; }
                sleep 0.1
            done
            if [ "$ready" = 1 ]; then
                # shellcheck disable=SC2046
                run_loadgen "br-$s" $(scenario_args "$s") --port "$MQ_PORT" \
                    --label "mosquitto+bridge" --ack puback \
                    --kafka-brokers "127.0.0.1:$KAFKA_PORT" --kafka-topic "$BRIDGE_TOPIC" \
                    --kafka-value uplink-batch --engine-pid "$BRIDGE_PID"
            else
                log "the bridge did not get ready"
                tail -20 "$OUT/logs/bridge-$s.log" >&2
            fi
            stop_bg "$BRIDGE_TPID"
            stop_mosquitto
            stop_tansu
        else
            log "no mosquitto or python paho-mqtt/confluent-kafka: skipping the bridge"
        fi
    done
else
    log "skipping the Kafka whole-path comparison (KAFKA_SCENARIOS empty or no tansu)"
fi

# --- BENCHMARKS.md -----------------------------------------------------------------------
echo "LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.env"
if [ "$BENCH_MD" != "-" ]; then
    python3 - "$OUT" "$BENCH_MD" <<'PY'
"""Writes BENCHMARKS.md from the loadgen JSON reports of a benches/run.sh result directory."""
import json
import os
import re
import sys

out, target = sys.argv[1], sys.argv[2]
env = dict(
    line.rstrip("\n").split("=", 1)
    for line in open(os.path.join(out, "machine.env"))
    if "=" in line
)


def load(name):
    path = os.path.join(out, "reports", name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def rc(name):
    path = os.path.join(out, "reports", name + ".rc")
    return open(path).read().strip() if os.path.exists(path) else "-"


def f(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"


def usage(r):
    e = r.get("engine") or {}
    return e.get("avg_cores"), e.get("peak_rss_mb")


def result(r, name):
    if r["failures"]:
        return "FAIL: " + "; ".join(r["failures"])
    return "PASS" if rc(name) == "0" else f"exit {rc(name)}"


def out_lat(r):
    log = r.get("log") or {}
    return log.get("latency") or {}


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.1f}x"


runs = sorted(
    n[:-5] for n in os.listdir(os.path.join(out, "reports")) if n.endswith(".json")
)
L = []
title = "# Benchmarks"
if env.get("LABEL"):
    title += f" ({env['LABEL']})"
L.append(title + "\n")
L.append(
    "Written by `benches/run.sh` from loadgen's JSON reports. Loadgen, the engine and the"
    " peers all run on the same machine, so they share its cores.\n"
)
if env.get("SIZE") == "small":
    L.append(
        "> **Smoke run** (`SIZE=small`: a 2,000-point registry, a few seconds per run). It shows"
        " that `benches/run.sh` works end to end; its numbers say nothing about the targets,"
        " which are for 800,000 points. `SIZE=city benches/run.sh` replaces this file.\n"
    )
L.append("| machine | |\n|---|---|")
L.append(f"| CPU | {env.get('CPU_MODEL')} |")
L.append(f"| cores (nproc) | {env.get('NPROC')} |")
L.append(f"| RAM | {env.get('RAM_GB')} GB |")
L.append(f"| kernel | {env.get('KERNEL')} |")
L.append(f"| date | {env.get('DATE')} |")
L.append(f"| commit | {env.get('COMMIT')} |")
L.append(f"| size | {env.get('SIZE')} |")
L.append(
    f"| load average (1, 5, 15 min) | {env.get('LOADAVG_START', '-')} at the start,"
    f" {env.get('LOADAVG_END', '-')} at the end (anything else running shares the cores) |"
)
L.append(f"| peers | {env.get('MOSQ_VERSION')}; {env.get('TANSU_VERSION')} |\n")

L.append("## What each side did\n")
L.append(
    "- **firewatch**: decodes each protobuf `UplinkBatch`, checks gateway and points against"
    " the registry, deduplicates, runs the pipeline (incidents, supervision), appends to the"
    " embedded log and fdatasyncs it (`sink.embedded.fsync = batch`), then publishes the"
    " application-level `UplinkAck` naming the durable alarms. Ack latency = intended send"
    " time to that ack. Output = the alarm's record in `fw.alarms`; its record time is when"
    " the shard processed it, before the append and fsync, so \"to log\" is shorter than"
    " the ack latency and not a durability point."
)
L.append(
    "- **firewatch+kafka**: the same, but the records go to Kafka (tansu, memory storage)"
    " and the ack waits for Kafka's delivery reports (acks=all); fw.alarms is also fsync'd"
    " locally. Output = a consumer (librdkafka, fetch.wait.max.ms=10) receiving the record on"
    " `fw.alarms`."
)
L.append(
    "- **mosquitto**: an in-memory forward, no persistence (`persistence false`), no"
    " decoding or validation; the ack is the QoS-1 PUBACK. Output = a QoS-1 subscriber on"
    " `fw/v1/gw/+/up` receiving the publish."
)
L.append(
    "- **mosquitto+bridge**: Mosquitto as above plus `benches/peers/bridge.py` (paho-mqtt"
    " subscriber, confluent-kafka producer, acks=all) forwarding each payload unchanged to"
    " one Kafka topic. The gateway's ack is still Mosquitto's PUBACK, given before the"
    " bridge or Kafka have the message (nothing is durable when the gateway is told it is)."
    " Output = a consumer receiving the record on the bridge topic.\n"
)
L.append(
    "Latency is open-loop: from each event's intended send time, so a slow system shows up"
    " as latency rather than as a lower offered load. \"to output\" has millisecond"
    " resolution (it compares wall clocks with the event's `device_time_ms`). Heartbeats wait"
    " up to `--tick-ms` (50 ms) for their batch, so their latency includes that.\n"
)

fw = [n for n in runs if n.startswith("fw-")]
if fw:
    L.append("## firewatch, embedded log\n")
    L.append(
        "| scenario | gateways | points | events sent | events/s | alarms sent / acked | output observed / missing / dup |"
        " alarm ack p50 | p99 | p99.9 | max | alarm to log p99 | heartbeat p99 | engine cores | engine peak RSS MB | result |"
    )
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for n in fw:
        r = load(n)
        c, rss = usage(r)
        log = r.get("log") or {}
        a = r["alarm_latency"]
        L.append(
            f"| {n[3:]} | {r['gateways_connected']}/{r['gateways']} | {r['points']} | {r['events_sent']} |"
            f" {f(r['achieved_rate'], 0)} | {r['alarms_sent']} / {r['alarms_acked']} |"
            f" {log.get('alarms_observed', '-')} / {log.get('alarms_missing', '-')} / {log.get('duplicates', '-')} |"
            f" {f(a['p50_ms'])} | {f(a['p99_ms'])} | {f(a['p999_ms'])} | {f(a['max_ms'])} |"
            f" {f(out_lat(r).get('p99_ms'))} | {f(r['heartbeat_latency']['p99_ms'])} |"
            f" {f(c)} | {f(rss, 1)} | {result(r, n)} |"
        )
    L.append("\nLatencies in ms. In `outage` the alarm latency includes the alarms held by"
             " gateways while they were down (latency class `outage`). Per-scenario details (per-source latency, per-second timeline,"
             " outage/nuisance/bad figures) are in each run's Markdown report.\n")


def compare(title, left, right, left_name, right_name, note):
    pairs = []
    for n in runs:
        if n.startswith(left + "-"):
            s = n[len(left) + 1:]
            if (right + "-" + s) in runs:
                pairs.append((s, load(n), load(right + "-" + s), n, right + "-" + s))
    if not pairs:
        return
    L.append(f"## {title}\n")
    L.append(note + "\n")
    L.append(
        f"| scenario | side | events/s | alarms sent / acked | observed / missing / dup | alarm ack p50 | p99 | max |"
        f" alarm to output p50 | p99 | heartbeat p99 | cores | peak RSS MB | result |"
    )
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for s, a, b, na, nb in pairs:
        for side, r, n in ((left_name, a, na), (right_name, b, nb)):
            c, rss = usage(r)
            log = r.get("log") or {}
            al = r["alarm_latency"]
            o = out_lat(r)
            L.append(
                f"| {s} | {side} | {f(r['achieved_rate'], 0)} | {r['alarms_sent']} / {r['alarms_acked']} |"
                f" {log.get('alarms_observed', '-')} / {log.get('alarms_missing', '-')} / {log.get('duplicates', '-')} |"
                f" {f(al['p50_ms'])} | {f(al['p99_ms'])} | {f(al['max_ms'])} |"
                f" {f(o.get('p50_ms'))} | {f(o.get('p99_ms'))} | {f(r['heartbeat_latency']['p99_ms'])} |"
                f" {f(c)} | {f(rss, 1)} | {result(r, n)} |"
            )
        ca, ra = usage(a)
        cb, rb = usage(b)
        L.append(
            f"| {s} | **ratio {left_name}/{right_name}** | {ratio(a['achieved_rate'], b['achieved_rate'])} | | |"
            f" {ratio(a['alarm_latency']['p50_ms'], b['alarm_latency']['p50_ms'])} |"
            f" {ratio(a['alarm_latency']['p99_ms'], b['alarm_latency']['p99_ms'])} |"
            f" {ratio(a['alarm_latency']['max_ms'], b['alarm_latency']['max_ms'])} |"
            f" {ratio(out_lat(a).get('p50_ms'), out_lat(b).get('p50_ms'))} |"
            f" {ratio(out_lat(a).get('p99_ms'), out_lat(b).get('p99_ms'))} |"
            f" {ratio(a['heartbeat_latency']['p99_ms'], b['heartbeat_latency']['p99_ms'])} |"
            f" {ratio(ca, cb)} | {ratio(ra, rb)} | |"
        )
    L.append("")


def target_rows():
    """The DESIGN.md targets against what this run measured."""
    rows = []
    storm, kstorm = load("fw-storm"), load("fwk-storm")
    peak, steady = load("fw-peak"), load("fw-steady")
    if storm:
        missing = (storm.get("log") or {}).get("alarms_missing")
        lost = storm["alarms_unacked"] + storm["alarms_rejected"] + (missing or 0)
        rows.append(("zero lost alarms (storm)", "0", str(lost), lost == 0))
        p99 = storm["alarm_latency"]["p99_ms"]
        rows.append(("alarm p99 to durable+acked, embedded log (storm)", "<= 5 ms",
                     f"{p99:.2f} ms", p99 <= 5))
    if kstorm:
        p99 = kstorm["alarm_latency"]["p99_ms"]
        rows.append(("alarm p99 to acked through Kafka (storm)", "<= 25 ms",
                     f"{p99:.2f} ms", p99 <= 25))
    if peak:
        rate = peak["achieved_rate"]
        offered = peak["target_rate"]
        met = rate >= 1e6 if offered >= 1e6 else f"n/a (offered {offered:,.0f}/s)"
        rows.append(("peak sustained ingest (peak)", ">= 1,000,000 events/s",
                     f"{rate:,.0f} events/s", met))
    if steady and steady.get("engine"):
        rss = steady["engine"]["peak_rss_mb"]
        rows.append(("engine RSS (steady)", "<= 512 MB", f"{rss:.1f} MB", rss <= 512))
    return rows


rows = target_rows()
if rows:
    L.append("## Targets (DESIGN.md)\n")
    L.append("| target | goal | measured | met |\n|---|---|---|---|")
    for name, goal, got, ok in rows:
        met = ok if isinstance(ok, str) else ("yes" if ok else "**no**")
        L.append(f"| {name} | {goal} | {got} | {met} |")
    L.append("")

compare(
    "MQTT ingest: firewatch against Mosquitto",
    "fw", "mq", "firewatch", "mosquitto",
    "Same registry, schedule and seed. firewatch acks after decode, dedup, pipeline and an"
    " fsync'd log append; Mosquitto acks (PUBACK) an in-memory forward. Cores and RSS are the"
    " broker process's (engine /proc for firewatch, the mosquitto process). Ratios above 1"
    " mean firewatch took longer / used more.",
)
compare(
    "Whole path into Kafka (tansu): firewatch against Mosquitto + bridge",
    "fwk", "br", "firewatch+kafka", "mosquitto+bridge",
    "One fresh tansu broker (memory storage) per side. firewatch acks only after Kafka's"
    " delivery reports; the bridge side's ack is Mosquitto's PUBACK, before the message"
    " reaches Kafka. Output = the consumer receiving the alarm. Cores and RSS: the engine"
    " process / the bridge process (Mosquitto and tansu not counted on either side).",
)

broken = sorted(
    n[:-3] for n in os.listdir(os.path.join(out, "reports"))
    if n.endswith(".rc") and n[:-3] not in runs
)
if broken:
    L.append("## Runs without a report\n")
    for n in broken:
        L.append(f"- `{n}`: loadgen exited {rc(n)} without writing its report (see"
                 f" `$OUT/logs/loadgen-{n}.log`; 124/137 = killed by the time limit or a signal).")
    L.append("")

L.append("## Commands\n")
L.append("The whole run: `SIZE=" + env.get("SIZE", "small") + " benches/run.sh`. It ran:\n")
L.append("```sh")
for line in open(os.path.join(out, "commands.txt")):
    line = line.rstrip("\n").replace(out, "$OUT")
    L.append(re.sub(r"--engine-pid \d+", "--engine-pid $PID", line))
L.append("```\n")
L.append("`$OUT` was a fresh result directory; the reports (JSON, Markdown, SVG) and logs"
         " of every run are kept there. `$PID` is the process measured: the engine, the"
         " mosquitto process, or the bridge.")

with open(target, "w") as fh:
    fh.write("\n".join(L) + "\n")
print(f"run.sh: wrote {target}", file=sys.stderr)
PY
fi
log "done: reports in $OUT/reports"
