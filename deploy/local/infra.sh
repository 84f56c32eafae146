#!/usr/bin/env bash
# Local infrastructure without Docker: a real Apache Kafka broker (KRaft, from Maven Central jars)
# and a MongoDB-wire server (MONGODB_URI if set, else a local mongod, else FerretDB 1.x built with Go).
# Everything is provisioned into a cache dir, reused on the next run, and bound to loopback only.
#
#   deploy/local/infra.sh provision|start|stop|status|env [kafka|db|all]
#
# Every command is idempotent: start on a running server says so and returns 0.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${AFTERSALES_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aftersales}"
RUN="$CACHE/run"
LOGS="$CACHE/logs"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka/pom.xml")"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_PARTITIONS="${KAFKA_PARTITIONS:-12}"
KAFKA_HEAP="${KAFKA_HEAP:-1g}"
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
# Where the servers keep their data: the cache by default (make up keeps its demo across restarts);
# with-infra.sh points it at a scratch dir per run so test topics and databases never pile up.
DATA_ROOT="${AFTERSALES_DATA_DIR:-$CACHE}"
KAFKA_DATA="$DATA_ROOT/kafka-data"
MONGO_PORT="${MONGO_PORT:-27017}"
FERRETDB_VERSION="$(sed -n 's:^[[:space:]]*\(require[[:space:]]\)\{0,1\}github.com/FerretDB/FerretDB \(v[0-9.]*\).*:\2:p' "$HERE/ferretdb/go.mod")"
FERRETDB_SRC_HASH="$(cat "$HERE"/ferretdb/*.go "$HERE/ferretdb/go.mod" "$HERE/ferretdb/go.sum" | sha256sum | cut -c1-12)"
FERRETDB_BIN="$CACHE/ferretdb-$FERRETDB_VERSION-$FERRETDB_SRC_HASH/ferretdb-local"
DB_DATA="$DATA_ROOT/db-data"
START_TIMEOUT_S="${INFRA_START_TIMEOUT_S:-120}"

mkdir -p "$RUN" "$LOGS"

say() { printf '[infra] %s\n' "$*" >&2; }
die() { printf '[infra] ERROR: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() {
  local pidfile="$1"
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

wait_for() { # wait_for <what> <timeout_s> <command...>
  local what="$1" timeout_s="$2"; shift 2
  local deadline=$((SECONDS + timeout_s))
  until "$@"; do
    if ((SECONDS >= deadline)); then return 1; fi
    sleep 0.5
  done
  say "$what is ready"
}

stop_pid() { # stop_pid <name> <pidfile>
  local name="$1" pidfile="$2"
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"; say "$name is not running"; return 0
  fi
  local pid; pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then say "$name did not stop in 30 s, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
    sleep 0.3
  done
  rm -f "$pidfile"
  say "$name stopped (pid $pid)"
}

# ---------------------------------------------------------------- Kafka

kafka_provision() {
  if [[ -f "$KAFKA_HOME/.complete" ]]; then return 0; fi
  command -v java >/dev/null || die "java (17+) is required for Kafka $KAFKA_VERSION"
  command -v mvn >/dev/null || die "mvn is required to resolve Kafka $KAFKA_VERSION from Maven Central"
  say "resolving Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME (first run only)"
  rm -rf "$KAFKA_HOME"; mkdir -p "$KAFKA_HOME"
  mvn -q -B -f "$HERE/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs" >"$LOGS/kafka-provision.log" 2>&1 \
    || { tail -20 "$LOGS/kafka-provision.log" >&2; die "mvn could not resolve Kafka (log: $LOGS/kafka-provision.log)"; }
  touch "$KAFKA_HOME/.complete"
}

kafka_ready() { port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$LOGS/kafka.log" 2>/dev/null; }

kafka_start() {
  if pid_alive "$RUN/kafka.pid" && ! port_open "$KAFKA_PORT"; then
    # Our broker's process lives but does not listen: still starting, or wedged (it would hold the
    # controller port and make a new broker fail to bind). Give it the start timeout, then replace it.
    wait_for "Kafka on 127.0.0.1:$KAFKA_PORT" "$START_TIMEOUT_S" kafka_ready \
      || { say "Kafka (pid $(cat "$RUN/kafka.pid")) is alive but not listening; replacing it"; stop_pid kafka "$RUN/kafka.pid"; }
  fi
  if port_open "$KAFKA_PORT"; then
    if pid_alive "$RUN/kafka.pid"; then
      wait_for "Kafka on 127.0.0.1:$KAFKA_PORT" "$START_TIMEOUT_S" kafka_ready \
        || die "Kafka is running but not ready (log: $LOGS/kafka.log)"
    else
      say "something already listens on 127.0.0.1:$KAFKA_PORT; using it as Kafka"
    fi
    return 0
  fi
  kafka_provision
  local conf="$KAFKA_DATA/server.properties"
  mkdir -p "$KAFKA_DATA"
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
      -e "s|@DATA_DIR@|$KAFKA_DATA/logs|g" -e "s|@PARTITIONS@|$KAFKA_PARTITIONS|g" \
      "$HERE/kafka/server.properties.in" >"$conf"
  local java_opts=(-Xms256m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
                   "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.yaml")
  if [[ ! -f "$KAFKA_DATA/logs/meta.properties" ]]; then
    say "formatting KRaft storage in $KAFKA_DATA/logs"
    java "${java_opts[@]}" -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool format --standalone \
      -t "$(java -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" \
      -c "$conf" >"$LOGS/kafka-format.log" 2>&1 \
      || { cat "$LOGS/kafka-format.log" >&2; die "Kafka storage format failed"; }
  fi
  : >"$LOGS/kafka.log"
  nohup java "${java_opts[@]}" -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$conf" >>"$LOGS/kafka.log" 2>&1 </dev/null &
  echo $! >"$RUN/kafka.pid"
  say "starting Kafka $KAFKA_VERSION (pid $(cat "$RUN/kafka.pid"), log $LOGS/kafka.log)"
  wait_for "Kafka on 127.0.0.1:$KAFKA_PORT" "$START_TIMEOUT_S" kafka_ready \
    || { tail -30 "$LOGS/kafka.log" >&2; die "Kafka did not start within ${START_TIMEOUT_S}s"; }
}

kafka_status() {
  if port_open "$KAFKA_PORT"; then echo "kafka    up    127.0.0.1:$KAFKA_PORT (Apache Kafka $KAFKA_VERSION, KRaft)"
  else echo "kafka    down"; return 1; fi
}

# ---------------------------------------------------------------- MongoDB wire server

db_kind() {
  if [[ -n "${MONGODB_URI:-}" ]]; then echo external
  elif command -v mongod >/dev/null; then echo mongod
  else echo ferretdb; fi
}

db_provision() {
  [[ "$(db_kind)" == ferretdb ]] || return 0
  if [[ -x "$FERRETDB_BIN" ]]; then return 0; fi
  command -v go >/dev/null || die "go is required to build FerretDB $FERRETDB_VERSION (or set MONGODB_URI / install mongod)"
  say "building FerretDB $FERRETDB_VERSION with Go into $FERRETDB_BIN (first run only)"
  mkdir -p "$(dirname "$FERRETDB_BIN")"
  (cd "$HERE/ferretdb" && go build -o "$FERRETDB_BIN.tmp" .) >"$LOGS/ferretdb-build.log" 2>&1 \
    || { tail -20 "$LOGS/ferretdb-build.log" >&2; die "FerretDB build failed (log: $LOGS/ferretdb-build.log)"; }
  mv "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
}

db_start() {
  local kind; kind="$(db_kind)"
  if [[ "$kind" == external ]]; then say "MONGODB_URI is set; not starting a local database"; return 0; fi
  if port_open "$MONGO_PORT"; then say "MongoDB-wire server already answers on 127.0.0.1:$MONGO_PORT"; return 0; fi
  db_provision
  mkdir -p "$DB_DATA/$kind"
  if [[ "$kind" == mongod ]]; then
    nohup mongod --bind_ip 127.0.0.1 --port "$MONGO_PORT" --dbpath "$DB_DATA/mongod" >"$LOGS/db.log" 2>&1 </dev/null &
  else
    nohup "$FERRETDB_BIN" -listen "127.0.0.1:$MONGO_PORT" -data "$DB_DATA/ferretdb" >"$LOGS/db.log" 2>&1 </dev/null &
  fi
  echo $! >"$RUN/db.pid"
  say "starting $kind (pid $(cat "$RUN/db.pid"), log $LOGS/db.log)"
  wait_for "$kind on 127.0.0.1:$MONGO_PORT" "$START_TIMEOUT_S" port_open "$MONGO_PORT" \
    || { tail -30 "$LOGS/db.log" >&2; die "$kind did not start within ${START_TIMEOUT_S}s"; }
}

db_status() {
  local kind; kind="$(db_kind)"
  if [[ "$kind" == external ]]; then echo "mongodb  external (MONGODB_URI)"; return 0; fi
  if port_open "$MONGO_PORT"; then echo "mongodb  up    127.0.0.1:$MONGO_PORT ($kind)"
  else echo "mongodb  down"; return 1; fi
}

# ---------------------------------------------------------------- dispatch

cmd="${1:-status}"; what="${2:-all}"
case "$what" in kafka|db|all) ;; *) die "unknown component '$what' (kafka, db or all)";; esac
run() { # run <verb>: call <component>_<verb> for the selected components
  local rc=0
  if [[ "$what" == kafka || "$what" == all ]]; then "kafka_$1" || rc=$?; fi
  if [[ "$what" == db || "$what" == all ]]; then "db_$1" || rc=$?; fi
  return $rc
}
case "$cmd" in
  provision) run provision ;;
  start) run start ;;
  status) run status ;;
  stop)
    if [[ "$what" == db || "$what" == all ]]; then stop_pid db "$RUN/db.pid"; fi
    if [[ "$what" == kafka || "$what" == all ]]; then stop_pid kafka "$RUN/kafka.pid"; fi ;;
  env)
    echo "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT"
    echo "MONGODB_URI=${MONGODB_URI:-mongodb://127.0.0.1:$MONGO_PORT/}" ;;
  *) die "usage: $0 provision|start|stop|status|env [kafka|db|all]" ;;
esac
