#!/usr/bin/env bash
# bench/run.sh: the benchmark of the heartbeat registry, side by side with etcd, in one run.
#
#   bench/run.sh            # default run, about 10 minutes on a 2-core machine
#   bench/run.sh --soak     # the `open` scenario sustained for 10 minutes (+18 minutes)
#
# What it does, on this machine and on loopback addresses only:
#   1. installs what is missing (Debian packages etcd-server, etcd-client, and
#      protobuf-compiler, whose `protoc` the etcd client crate's build needs), and builds
#      `registry-node` and `registry-bench` (with the `etcd` feature) in release mode;
#   2. starts a three-node registry on 127.0.0.1:22101-22103 and a three-member etcd
#      (etcd-server as shipped, fsync on) on 127.0.0.1:23791-23793 (peers 23801-23803),
#      configs, data and logs in a temporary directory; both clusters are started afresh
#      for each scenario, so each one's memory and disk figures are its own;
#   3. runs the scenarios (registry first, then etcd, in the same run):
#        single   closed loop, 256 reporters, one heartbeat per request
#                 (registry vs etcd put vs etcd lease keep-alive)
#        batch    closed loop, 32 reporters, 100 heartbeats per request (etcd: txn of 100 puts)
#        open     open loop, 100k services each heartbeating every 10 s, one request per
#                 heartbeat, 60 s (600 s with --soak), with a timeline of p99, RSS and data
#                 size per node
#        open4    the same, with one request per simulated host (its 4 services' heartbeats
#                 in one request, as a per-host reporter agent would send them)
#        list     service list at 1k, 10k and 100k services: full (linearizable, stale) and
#                 host-filtered, with the Raft term changes around each row
#        watch    (registry only, not in the default set; about 2 minutes) 100 event
#                 streams (GET /v1/events) on one follower at 100k services: the events/s
#                 streamed while new services are created 4 × 1000 per request, their lag,
#                 and single-heartbeat throughput and CPU per heartbeat without and with
#                 the watchers (idle, and receiving 1000 events/s); the nodes run with a
#                 service_down_time of 600 s so the registered, silent services make no
#                 `down` events during it
#        failover (registry only, not in the default set; etcd is not killed) SIGKILLs the
#                 registry leader FAILOVER_KILLS (20) times under steady single-heartbeat
#                 writes: the time from each kill to the first write a surviving node
#                 acknowledges (HTTP 200 of a POST /v1/heartbeats sent after the kill),
#                 median, p90 and max, and the Raft term changes of each failover and of
#                 the killed node's rejoin; registry-bench restarts the killed node
#                 ($WORK/registry/restart.sh N) and waits for it to catch up before the
#                 next kill
#        million  (registry only, not in the default set; about 3 minutes) MILLION_SERVICES
#                 (1000000) services heartbeating every 10 s from per-host reporters with
#                 MILLION_BATCH (10) services per request, MILLION_DURATION (60s) measured
#                 after 30 s of warm-up (the first interval registers every service), with
#                 the timeline of p99, RSS and data size per node
#        overload (registry only, not in the default set; about 90 s) does overload make a
#                 healthy service look dead? The capacity (a 10 s closed loop of single
#                 heartbeats, 256 reporters), then an open loop at OVERLOAD_FACTOR (2) × that
#                 capacity, one heartbeat per request every 2 s, for 4 × service_down_time;
#                 an observer lists the services on the nodes every 500 ms (stale reads,
#                 one node per round) and counts the load services listed `down` although
#                 they kept heartbeating (false downs), and a control group of 50 services
#                 stops after a quarter of the run: its delay to `down` is reported. The
#                 nodes run with service_down_time 12 s and report_interval 2 s, and their
#                 default max_concurrent_requests
#   4. prints every table (Markdown) with the command that reproduces it, and keeps them in
#      RESULTS (printed at the end);
#   5. stops every process it started, by its recorded PID (never by name), also on error
#      or Ctrl-C, and deletes the temporary directory (unless --keep).
#
# Options:
#   --soak              the `open` scenario for 600 s instead of 60 s
#   --scenarios LIST    comma-separated subset of single,batch,open,open4,list,tls,watch,
#                       failover,million,overload (default: single,batch,open,open4,list;
#                       `tls` runs single
#                       heartbeats against the registry over plain HTTP and then over mutual
#                       TLS, registry only, in the same run)
#   --no-etcd           registry only
#   --quick             tiny durations and sizes (checks the script, measures nothing;
#                       failover: 2 kills)
#   --skip-build        use the binaries already in target/release
#   --node-bin PATH     run this registry-node binary (e.g. one built from another commit)
#   --keep              keep the temporary directory (logs, data, results)
#   --perf              record `perf` (DWARF call graphs) on the registry leader during the
#                       `single`, `batch`, `open` and `open4` scenarios (and on the watched
#                       follower during `watch`'s streaming) and print its top symbols, self
#                       and inclusive (needs linux-perf)
# Environment: BENCH_TMP (parent of the temporary directory, default /tmp),
#              CARGO_TARGET_DIR; BENCH_PORT_BASE (first registry port, default 22101; the
#              etcd ports move with it, so that two runs can share a machine); the
#              registry's Raft settings, for experiments (defaults as in
#              the configs registryctl init-cluster writes): RAFT_HEARTBEAT (50ms), RAFT_ELECTION_MIN
#              (150ms), RAFT_ELECTION_MAX (300ms), RAFT_SNAPSHOT_LOGS (1000000),
#              RAFT_KEEP_LOGS (1000); GROUP_COMMIT_LINGER (unset: the nodes' default, 2ms;
#              written to the configs only when set); OPEN_SERVICES (100000) for the open-loop scenarios;
#              WATCH_SERVICES (100000) and WATCH_WATCHERS (100) for the watch scenario;
#              FAILOVER_KILLS (20) for the failover scenario; LIST_SIZES (1000,10000,100000) and
#              LIST_REPEAT (20) for the list scenario.
#              OVERLOAD_FACTOR (2) and OVERLOAD_DURATION (4 × its service_down_time of
#              12 s) for the overload scenario.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT_DIR="$(dirname -- "$SCRIPT_DIR")"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT_DIR/target}"
NODE_BIN="$TARGET_DIR/release/registry-node"
BENCH_BIN="$TARGET_DIR/release/registry-bench"

HOST=127.0.0.1
# BENCH_PORT_BASE (default 22101) shifts every port below by the same amount, so that two
# runs can share a machine: e.g. BENCH_PORT_BASE=32101 uses 32101-32103, 33791-33793, 33801-33803.
PORT_BASE="${BENCH_PORT_BASE:-22101}"
[[ $PORT_BASE =~ ^[0-9]+$ ]] && ((PORT_BASE >= 1024 && PORT_BASE <= 63000)) ||
  { echo "run.sh: BENCH_PORT_BASE must be a number in 1024..63000" >&2; exit 2; }
PORT_SHIFT=$((PORT_BASE - 22101))
REG_PORTS=($((22101 + PORT_SHIFT)) $((22102 + PORT_SHIFT)) $((22103 + PORT_SHIFT)))
ETCD_CLIENT_PORTS=($((23791 + PORT_SHIFT)) $((23792 + PORT_SHIFT)) $((23793 + PORT_SHIFT)))
ETCD_PEER_PORTS=($((23801 + PORT_SHIFT)) $((23802 + PORT_SHIFT)) $((23803 + PORT_SHIFT)))

SOAK=0
QUICK=0
NO_ETCD=0
SKIP_BUILD=0
KEEP=0
PERF=0
SCENARIOS="single,batch,open,open4,list"
ORIG_ARGS="$*"
CURRENT=none
AUTH_SECTION=1
# 1 while the registry cluster serves HTTPS (scenario tls): certificates under $WORK/tls.
TLS=0
# The nodes' service_down_time (scenario watch raises it, overload lowers it) and
# report_interval (overload lowers it: the nodes correct a service_down_time not above it
# to 2.5 × it).
DOWN_TIME=60s
REPORT_INTERVAL=10s

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while (($#)); do
  case "$1" in
  --soak) SOAK=1 ;;
  --quick) QUICK=1 ;;
  --no-etcd) NO_ETCD=1 ;;
  --skip-build) SKIP_BUILD=1 ;;
  --keep) KEEP=1 ;;
  --perf) PERF=1 ;;
  --node-bin)
    shift
    NODE_BIN="${1:?--node-bin needs a path}"
    ;;
  --scenarios)
    shift
    SCENARIOS="${1:?--scenarios needs a list}"
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    echo "run.sh: unknown option '$1' (see --help)" >&2
    exit 2
    ;;
  esac
  shift
done

say() { printf '%s\n' "$*" >&2; }
die() {
  say "run.sh: $*"
  exit 1
}

# --- Workload sizes ---------------------------------------------------------------------

CLOSED_DURATION=20s
CLOSED_WARMUP=5s
OPEN_SERVICES="${OPEN_SERVICES:-100000}"
OPEN_INTERVAL=10s
OPEN_DURATION=60s
OPEN4_DURATION=60s
OPEN_WARMUP=10s
OPEN_SAMPLE=10s
OPEN4_SAMPLE=10s
LIST_SIZES="${LIST_SIZES:-1000,10000,100000}"
LIST_REPEAT="${LIST_REPEAT:-20}"
WATCH_SERVICES="${WATCH_SERVICES:-100000}"
WATCH_WATCHERS="${WATCH_WATCHERS:-100}"
WATCH_DURATION=20s
WATCH_COST_DURATION=10s
WATCH_COST_WARMUP=3s
FAILOVER_KILLS="${FAILOVER_KILLS:-20}"
MILLION_SERVICES="${MILLION_SERVICES:-1000000}"
MILLION_BATCH="${MILLION_BATCH:-10}"
MILLION_DURATION="${MILLION_DURATION:-60s}"
MILLION_WARMUP=30s
OVERLOAD_FACTOR="${OVERLOAD_FACTOR:-2}"
OVERLOAD_DOWN_TIME=12s
OVERLOAD_REPORT_INTERVAL=2s
OVERLOAD_INTERVAL=2s
OVERLOAD_CAPACITY=10s
OVERLOAD_CONTROL=50
if ((SOAK)); then
  OPEN_DURATION=600s
  OPEN_SAMPLE=60s
fi
if ((QUICK)); then
  CLOSED_DURATION=3s
  CLOSED_WARMUP=1s
  OPEN_SERVICES=2000
  OPEN_INTERVAL=2s
  OPEN_DURATION=4s
  OPEN4_DURATION=4s
  OPEN_WARMUP=2s
  OPEN_SAMPLE=2s
  OPEN4_SAMPLE=2s
  LIST_SIZES=100,1000
  LIST_REPEAT=3
  MILLION_SERVICES=5000
  MILLION_DURATION=4s
  MILLION_WARMUP=2s
  WATCH_SERVICES=2000
  WATCH_WATCHERS=10
  WATCH_DURATION=3s
  WATCH_COST_DURATION=2s
  WATCH_COST_WARMUP=1s
  FAILOVER_KILLS=2
  OVERLOAD_DOWN_TIME=6s
  OVERLOAD_CAPACITY=2s
  OVERLOAD_CONTROL=10
fi

# --- Processes: started here, recorded, stopped by PID ------------------------------------

WORK="$(mktemp -d "${BENCH_TMP:-/tmp}/registry-bench.XXXXXX")"
TLS_DIR="$WORK/tls"
RESULTS="$WORK/results.md"
declare -A PIDS=() # name -> pid, of every process this script started and has not stopped
# 1 while registry-bench may restart registry nodes (scenario failover): their PIDs are then
# the ones in their PID files.
FOLLOW_PID_FILES=0

# Stops the process recorded under $1: SIGTERM, then SIGKILL after 10 s. Only a PID this
# script recorded, and only while its command line still holds $2 (the program it was
# started as, or for a registry node its config file).
stop_proc() {
  local name=$1 pid=${PIDS[$1]:-} exe=$2 i
  [[ -n $pid ]] || return 0
  unset "PIDS[$name]"
  if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$exe"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "run.sh: $name (pid $pid) did not stop on SIGTERM; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

stop_registry() {
  local i
  for i in 1 2 3; do stop_proc "registry-$i" "$WORK/registry/node$i/node.toml"; done
}

# Takes the registry nodes' PIDs from their PID files (scenario failover: registry-bench
# restarts killed nodes through $WORK/registry/restart.sh, which writes the new PID there).
follow_pid_files() {
  local i pid
  for i in 1 2 3; do
    pid=$(cat "$WORK/registry/node$i/pid" 2>/dev/null) || continue
    if [[ $pid =~ ^[0-9]+$ ]]; then PIDS[registry-$i]=$pid; fi
  done
}

stop_etcd() {
  local i
  for i in 1 2 3; do stop_proc "etcd-$i" etcd; done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_proc perf perf
  if ((FOLLOW_PID_FILES)); then follow_pid_files; fi
  stop_registry
  stop_etcd
  if ((KEEP)) || ((rc != 0)); then
    say "run.sh: kept $WORK (logs, data, results)"
  else
    rm -rf -- "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() { ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Waits (up to $2 seconds) until command $1... succeeds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# --- Set-up -------------------------------------------------------------------------------

install_missing() {
  local pkgs=()
  if ((!NO_ETCD)); then
    command -v etcd >/dev/null || pkgs+=(etcd-server)
    command -v etcdctl >/dev/null || pkgs+=(etcd-client)
  fi
  if ((!SKIP_BUILD)) && ((!NO_ETCD)); then
    command -v protoc >/dev/null || pkgs+=(protobuf-compiler)
  fi
  ((${#pkgs[@]})) || return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    say "run.sh: installing ${pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  else
    die "install the Debian packages ${pkgs[*]} first"
  fi
}

build() {
  ((SKIP_BUILD)) && return 0
  say "run.sh: building registry-node and registry-bench (release)"
  local features=()
  ((NO_ETCD)) || features=(--features bench/etcd)
  (cd "$ROOT_DIR" && cargo build --release --quiet -p registry-node -p bench "${features[@]}")
}

check_ports() {
  local p
  for p in "${REG_PORTS[@]}" "${ETCD_CLIENT_PORTS[@]}" "${ETCD_PEER_PORTS[@]}"; do
    port_free "$p" || die "port $HOST:$p is in use (another benchmark running?)"
  done
}

reg_addr() { printf '%s:%s' "$HOST" "${REG_PORTS[$1 - 1]}"; }

# The registry endpoint of node $1 as a URL: https:// while TLS is on.
reg_url() { if ((TLS)); then printf 'https://%s' "$(reg_addr "$1")"; else reg_addr "$1"; fi; }

# GET $1 from registry node $2 (over HTTPS with the CA while TLS is on).
reg_curl() {
  if ((TLS)); then
    curl -sf --noproxy '*' --max-time 2 --cacert "$TLS_DIR/ca.pem" "https://$(reg_addr "$2")$1"
  else
    curl -sf --noproxy '*' --max-time 2 "http://$(reg_addr "$2")$1"
  fi
}

# The CA and node certificates of scenario tls (made once per run).
TLS_DAYS=2
TLS_CA_NAME="registry bench CA"
info() { say "run.sh: $*"; }
# shellcheck source=../scripts/tls-certs.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../scripts/tls-certs.sh"
make_bench_certs() {
  local i
  make_ca
  for i in 1 2 3; do make_cert "node$i" "node$i" "IP:$HOST"; done
}

start_registry() {
  local i j dir
  for i in 1 2 3; do
    dir="$WORK/registry/node$i"
    rm -rf -- "$dir/data"
    mkdir -p "$dir"
    {
      printf 'node_id = %d\nlisten = "%s"\ndata_dir = "data"\n' "$i" "$(reg_addr "$i")"
      printf 'service_down_time = "%s"\nreport_interval = "%s"\n' "$DOWN_TIME" "$REPORT_INTERVAL"
      printf 'write_timeout = "5s"\nread_timeout = "2s"\n'
      # Only when set: a node binary older than the setting (--node-bin) refuses it.
      [[ -z ${GROUP_COMMIT_LINGER:-} ]] || printf 'group_commit_linger = "%s"\n' "$GROUP_COMMIT_LINGER"
      printf '\n[raft]\n'
      printf 'heartbeat_interval = "%s"\n' "${RAFT_HEARTBEAT:-50ms}"
      printf 'election_timeout_min = "%s"\n' "${RAFT_ELECTION_MIN:-150ms}"
      printf 'election_timeout_max = "%s"\n' "${RAFT_ELECTION_MAX:-300ms}"
      printf 'snapshot_logs_since_last = %s\n' "${RAFT_SNAPSHOT_LOGS:-1000000}"
      printf 'max_in_snapshot_log_to_keep = %s\n' "${RAFT_KEEP_LOGS:-1000}"
      for j in 1 2 3; do
        printf '\n[[peers]]\nid = %d\naddr = "%s"\n' "$j" "$(reg_addr "$j")"
      done
      if ((TLS)); then
        printf '\n[tls]\ncert = "%s/node%d.pem"\nkey = "%s/node%d-key.pem"\nca = "%s/ca.pem"\n' \
          "$TLS_DIR" "$i" "$TLS_DIR" "$i" "$TLS_DIR"
      fi
      if ((AUTH_SECTION)); then
        # No client tokens (as the local demo cluster); nodes authenticate to each other.
        printf '\n[auth]\nmode = "disabled"\ncluster_secret = "registry-bench-%s"\n' "$$"
      fi
    } >"$dir/node.toml"
  done
  # Fresh data directories: the nodes form a new group. A registry-node older than the
  # --bootstrap flag forms it on its own.
  local bootstrap=()
  "$NODE_BIN" --help 2>/dev/null | grep -q -- '--bootstrap' && bootstrap=(--bootstrap)
  for i in 1 2 3; do
    dir="$WORK/registry/node$i"
    echo "=== run.sh: $(date -u +%T) start for scenario $CURRENT" >>"$dir/node.log"
    RUST_LOG="${RUST_LOG:-info,warp::filters::trace=warn}" \
      "$NODE_BIN" --config "$dir/node.toml" "${bootstrap[@]}" >>"$dir/node.log" 2>&1 &
    PIDS[registry-$i]=$!
    echo "${PIDS[registry-$i]}" >"$dir/pid"
  done
  sleep 0.5
  # A registry-node older than the [auth] section refuses it: start those without it.
  if ((AUTH_SECTION)) && ! kill -0 "${PIDS[registry-1]}" 2>/dev/null &&
    grep -q 'unknown field .auth.' "$WORK/registry/node1/node.log"; then
    say "run.sh: this registry-node has no [auth] section; starting it without"
    stop_registry
    AUTH_SECTION=0
    start_registry
    return
  fi
  for i in 1 2 3; do
    wait_for 30 reg_curl "/health" "$i" ||
      die "registry node $i not healthy within 30 s (see $WORK/registry/node$i/node.log)"
  done
}

etcd_endpoints() {
  local i out=()
  for i in 0 1 2; do out+=("$HOST:${ETCD_CLIENT_PORTS[$i]}"); done
  (
    IFS=,
    echo "${out[*]}"
  )
}

start_etcd() {
  local i dir cluster=""
  for i in 1 2 3; do
    cluster+="${cluster:+,}e$i=http://$HOST:${ETCD_PEER_PORTS[$i - 1]}"
  done
  for i in 1 2 3; do
    dir="$WORK/etcd/e$i"
    rm -rf -- "$dir/data"
    mkdir -p "$dir"
    echo "=== run.sh: $(date -u +%T) start for scenario $CURRENT" >>"$dir/etcd.log"
    # As shipped (fsync on, default snapshot count and quota), plus a periodic compaction
    # of the key history, so that the long runs stay under etcd's 2 GiB backend quota.
    etcd --name "e$i" --data-dir "$dir/data" \
      --listen-client-urls "http://$HOST:${ETCD_CLIENT_PORTS[$i - 1]}" \
      --advertise-client-urls "http://$HOST:${ETCD_CLIENT_PORTS[$i - 1]}" \
      --listen-peer-urls "http://$HOST:${ETCD_PEER_PORTS[$i - 1]}" \
      --initial-advertise-peer-urls "http://$HOST:${ETCD_PEER_PORTS[$i - 1]}" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token registry-bench \
      --auto-compaction-mode periodic --auto-compaction-retention 1m \
      --logger zap --log-outputs stderr >>"$dir/etcd.log" 2>&1 &
    PIDS[etcd-$i]=$!
    echo "${PIDS[etcd-$i]}" >"$dir/pid"
  done
  wait_for 30 env ETCDCTL_API=3 etcdctl --endpoints "$(etcd_endpoints)" endpoint health ||
    die "etcd not healthy within 30 s (see $WORK/etcd/e*/etcd.log)"
}

fresh_clusters() {
  stop_registry
  start_registry
  if ((!NO_ETCD)); then
    stop_etcd
    start_etcd
  fi
  sleep 1
}

# --- Scenarios ----------------------------------------------------------------------------

# Runs registry-bench with the cluster options and the given workload; prints and keeps
# its tables.
bench() {
  local args=(
    --registry "$(reg_url 1),$(reg_url 2),$(reg_url 3)"
    --registry-pid-file "$WORK/registry/node1/pid,$WORK/registry/node2/pid,$WORK/registry/node3/pid"
    --registry-data-dir "$WORK/registry/node1/data,$WORK/registry/node2/data,$WORK/registry/node3/data"
  )
  if ((!NO_ETCD)); then
    args+=(
      --etcd "$(etcd_endpoints)"
      --etcd-pid-file "$WORK/etcd/e1/pid,$WORK/etcd/e2/pid,$WORK/etcd/e3/pid"
      --etcd-data-dir "$WORK/etcd/e1/data,$WORK/etcd/e2/data,$WORK/etcd/e3/data"
    )
  fi
  say "run.sh: $(date +%T) registry-bench $*"
  echo "load average before this scenario: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS"
  echo | tee -a "$RESULTS"
  "$BENCH_BIN" "${args[@]}" "$@" | tee -a "$RESULTS"
  echo | tee -a "$RESULTS"
}

targets() {
  if ((NO_ETCD)); then echo registry; else echo "$1"; fi
}

# The leader's PID, from any node's /v1/cluster.
leader_pid() {
  local id
  id=$(reg_curl /v1/cluster 1 |
    sed -n 's/.*"leader_id":\([0-9]*\).*/\1/p')
  [[ -n $id ]] && cat "$WORK/registry/node$id/pid"
}

# The PID of the first node that is not the leader (the follower registry-bench watch
# watches: the first endpoint that is not the leader).
follower_pid() {
  local id i
  id=$(reg_curl /v1/cluster 1 |
    sed -n 's/.*"leader_id":\([0-9]*\).*/\1/p')
  [[ -n $id ]] || return 1
  for i in 1 2 3; do
    if [[ $i != "$id" ]]; then
      cat "$WORK/registry/node$i/pid"
      return 0
    fi
  done
  return 1
}

# Starts `perf record` on the registry leader (or, with $4 = follower, on the first
# follower) for $1 seconds (profile name $2), after $3 seconds (default 3); its PID is
# recorded under "perf".
start_perf() {
  ((PERF)) || return 0
  command -v perf >/dev/null || {
    say "run.sh: perf not installed (apt-get install linux-perf): no profile"
    return 0
  }
  local lp
  if [[ ${4:-leader} == follower ]]; then lp=$(follower_pid) || return 0; else lp=$(leader_pid) || return 0; fi
  (sleep "${3:-3}" && exec perf record -F 199 --call-graph dwarf,16384 -p "$lp" \
    -o "$WORK/perf-$2.data" -- sleep "$1") >"$WORK/perf-$2.log" 2>&1 &
  PIDS[perf]=$!
}

# Prints the top of a perf report (arguments: perf report options); never fails.
perf_top() {
  local n=$1
  shift
  { perf report "$@" --stdio 2>/dev/null || true; } | grep '%' | grep -v '(inlined)' |
    sed 's/ *$//' | cut -c1-170 | head -"$n" | sed 's/^/    /' || true
}

# Waits for `perf record` and prints the leader's top symbols: self time, and the inclusive
# time of the registry's, sled's, openraft's and the codecs' functions.
report_perf() {
  local pid=${PIDS[perf]:-}
  [[ -n $pid ]] || return 0
  wait "$pid" || true
  unset "PIDS[perf]"
  local data="$WORK/perf-$1.data"
  [[ -s $data ]] || return 0
  {
    echo "perf: ${2:-registry leader} during the $1 scenario, self time (top 25):"
    echo
    perf_top 25 -i "$data" --no-children --sort dso,symbol -g none --percent-limit 0.3
    echo
    echo "perf: ${2:-registry leader} during the $1 scenario, inclusive time (top 40 of the"
    echo "registry's, sled's, openraft's, hyper's and the codecs' functions):"
    echo
    perf_top 400 -i "$data" --children --sort symbol -g none --percent-limit 0.7 |
      grep -E 'registry_|sled::|openraft::|serde_json|bincode|hyper::proto|malloc|writev|sync_file|fsync' |
      head -40 || true
    echo
  } | tee -a "$RESULTS"
}

scenario_single() {
  fresh_clusters
  start_perf 15 single
  bench --targets "$(targets registry,etcd-put,etcd-lease)" --prefix single \
    closed --concurrency 256 --batch 1 --duration "$CLOSED_DURATION" --warmup "$CLOSED_WARMUP"
  report_perf single
}

scenario_batch() {
  fresh_clusters
  start_perf 15 batch
  bench --targets "$(targets registry,etcd-put)" --prefix batch \
    closed --concurrency 32 --batch 100 --duration "$CLOSED_DURATION" --warmup "$CLOSED_WARMUP"
  report_perf batch
}

scenario_open() {
  fresh_clusters
  start_perf 15 open 30
  bench --targets "$(targets registry,etcd-put)" --prefix open \
    open --services "$OPEN_SERVICES" --interval "$OPEN_INTERVAL" --batch 1 \
    --duration "$OPEN_DURATION" --warmup "$OPEN_WARMUP" --sample-every "$OPEN_SAMPLE"
  report_perf open
}

scenario_open4() {
  fresh_clusters
  start_perf 15 open4 12
  bench --targets "$(targets registry,etcd-put)" --prefix open4 \
    open --services "$OPEN_SERVICES" --interval "$OPEN_INTERVAL" --batch 4 \
    --duration "$OPEN4_DURATION" --warmup "$OPEN_WARMUP" --sample-every "$OPEN4_SAMPLE"
  report_perf open4
}

# Single heartbeats, 256 reporters, against the registry alone: over plain HTTP, then over
# mutual TLS between the nodes and TLS from the load generator, each on a fresh cluster.
scenario_tls() {
  local saved_no_etcd=$NO_ETCD
  NO_ETCD=1
  make_bench_certs
  TLS=0
  fresh_clusters
  bench --targets registry --prefix plain \
    closed --concurrency 256 --batch 1 --duration "$CLOSED_DURATION" --warmup "$CLOSED_WARMUP"
  TLS=1
  fresh_clusters
  bench --targets registry --prefix tls --registry-cacert "$TLS_DIR/ca.pem" \
    closed --concurrency 256 --batch 1 --duration "$CLOSED_DURATION" --warmup "$CLOSED_WARMUP"
  TLS=0
  stop_registry
  NO_ETCD=$saved_no_etcd
}

# Watching, registry only: W event streams on a follower, at N services (registered, then
# silent: a service_down_time of 600 s keeps them from going down during the run).
scenario_watch() {
  local saved_no_etcd=$NO_ETCD
  NO_ETCD=1
  DOWN_TIME=600s
  fresh_clusters
  # The streaming run starts after registering and four write-path runs of
  # WATCH_COST_WARMUP + WATCH_COST_DURATION each (about 60 s at the default sizes).
  start_perf 15 watch 63 follower
  bench --targets registry --prefix watch \
    watch --services "$WATCH_SERVICES" --watchers "$WATCH_WATCHERS" --duration "$WATCH_DURATION" \
    --cost-duration "$WATCH_COST_DURATION" --cost-warmup "$WATCH_COST_WARMUP"
  report_perf watch "the watched registry follower"
  DOWN_TIME=60s
  stop_registry
  NO_ETCD=$saved_no_etcd
}

# Writes $WORK/registry/restart.sh: `restart.sh N` starts registry node N again in the
# background, on its config and data, and writes its new PID to its PID file (scenario
# failover: registry-bench runs it after each kill, once the killed process has exited).
write_restart_script() {
  local f="$WORK/registry/restart.sh"
  {
    echo '#!/usr/bin/env bash'
    echo '# restart.sh N: starts registry node N (1-3) of this bench/run.sh run again, in the'
    echo '# background, on its config and data; writes its new PID to its PID file.'
    echo 'set -euo pipefail'
    printf 'work=%q\nnode_bin=%q\nrust_log=%q\n' "$WORK" "$NODE_BIN" \
      "${RUST_LOG:-info,warp::filters::trace=warn}"
    cat <<'EOF'
i=${1:?node number (1-3)}
[[ $i =~ ^[1-3]$ ]] || { echo "restart.sh: the node is 1, 2 or 3, not '$i'" >&2; exit 2; }
dir=$work/registry/node$i
old=$(cat "$dir/pid" 2>/dev/null || true)
if [[ -n $old && -r /proc/$old/cmdline ]] &&
  tr '\0' ' ' <"/proc/$old/cmdline" | grep -qF -- "$dir/node.toml"; then
  echo "restart.sh: node $i still runs (pid $old)" >&2
  exit 1
fi
echo "=== restart.sh: $(date -u +%T) restart" >>"$dir/node.log"
RUST_LOG=$rust_log "$node_bin" --config "$dir/node.toml" </dev/null >>"$dir/node.log" 2>&1 &
echo $! >"$dir/pid"
EOF
  } >"$f"
  chmod +x "$f"
}

# Leader failover, registry only: FAILOVER_KILLS SIGKILLs of the leader under steady writes,
# the killed node restarted by registry-bench through restart.sh after each.
scenario_failover() {
  local saved_no_etcd=$NO_ETCD
  NO_ETCD=1
  fresh_clusters
  write_restart_script
  FOLLOW_PID_FILES=1
  echo "registry Raft settings: heartbeat_interval ${RAFT_HEARTBEAT:-50ms}," \
    "election_timeout ${RAFT_ELECTION_MIN:-150ms}-${RAFT_ELECTION_MAX:-300ms}" | tee -a "$RESULTS"
  bench --targets registry --prefix failover \
    failover --kills "$FAILOVER_KILLS" --restart-cmd "$WORK/registry/restart.sh {node}"
  follow_pid_files
  stop_registry
  FOLLOW_PID_FILES=0
  NO_ETCD=$saved_no_etcd
}

scenario_million() {
  fresh_clusters
  start_perf 15 million 40
  bench --targets registry --prefix million \
    open --services "$MILLION_SERVICES" --interval "$OPEN_INTERVAL" --batch "$MILLION_BATCH" \
    --duration "$MILLION_DURATION" --warmup "$MILLION_WARMUP" --sample-every "$OPEN_SAMPLE"
  report_perf million
}
# Overload, registry only: an open loop at OVERLOAD_FACTOR × the measured capacity for
# 4 × service_down_time, a false-down observer and a control group; the nodes run with a short
# service_down_time so that a few of them pass in about a minute.
scenario_overload() {
  local saved_no_etcd=$NO_ETCD
  NO_ETCD=1
  DOWN_TIME=$OVERLOAD_DOWN_TIME
  REPORT_INTERVAL=$OVERLOAD_REPORT_INTERVAL
  fresh_clusters
  bench --targets registry --prefix overload \
    overload --overload "$OVERLOAD_FACTOR" --interval "$OVERLOAD_INTERVAL" \
    --capacity-duration "$OVERLOAD_CAPACITY" --control "$OVERLOAD_CONTROL" \
    ${OVERLOAD_DURATION:+--duration "$OVERLOAD_DURATION"}
  DOWN_TIME=60s
  REPORT_INTERVAL=10s
  stop_registry
  NO_ETCD=$saved_no_etcd
}

scenario_list() {
  fresh_clusters
  bench --targets "$(targets registry,etcd-put)" --prefix list \
    list --sizes "$LIST_SIZES" --repeat "$LIST_REPEAT"
}

# --- Main ---------------------------------------------------------------------------------

install_missing
build
[[ -x $NODE_BIN && -x $BENCH_BIN ]] || die "missing $NODE_BIN or $BENCH_BIN (drop --skip-build)"
# registry-bench kills (failover) only a PID whose command line holds `registry-node`: a
# --node-bin of another name runs through a link of that name.
if [[ $(basename -- "$NODE_BIN") != registry-node ]]; then
  mkdir -p "$WORK/bin"
  ln -s -- "$(realpath -- "$NODE_BIN")" "$WORK/bin/registry-node"
  NODE_BIN="$WORK/bin/registry-node"
fi
check_ports

{
  echo "## registry-bench run, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- command: bench/run.sh${ORIG_ARGS:+ $ORIG_ARGS} (scenarios: $SCENARIOS)"
  echo "- machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)," \
    "$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
  if ((NO_ETCD)); then echo "- etcd: none"; else echo "- $(etcd --version | head -1)"; fi
  echo "- registry group_commit_linger: ${GROUP_COMMIT_LINGER:-unset (the default)}"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
} | tee "$RESULTS"

IFS=, read -r -a selected <<<"$SCENARIOS"
for s in "${selected[@]}"; do
  case "$s" in
  single | batch | open | open4 | list | tls | watch | failover | million | overload)
    CURRENT=$s
    "scenario_$s"
    ;;
  *) die "unknown scenario '$s' (single, batch, open, open4, list, tls, watch, failover, million, overload)" ;;
  esac
done

echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS"
stop_registry
stop_etcd
if ((KEEP)); then
  say "run.sh: results in $RESULTS"
else
  cp "$RESULTS" "${BENCH_TMP:-/tmp}/registry-bench-results.md"
  say "run.sh: results in ${BENCH_TMP:-/tmp}/registry-bench-results.md"
fi
