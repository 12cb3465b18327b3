#!/usr/bin/env bash
# local-cluster.sh: start, stop and inspect the local three-node heartbeat registry.
#
# Everything the script creates lives under cluster-config/run/:
#   config/        the founding nodes' configs (node1.toml..node3.toml), their cluster secret
#                  and client.env, written by `registryctl init-cluster` at the first start,
#                  as for a real deployment (without client tokens: a local demo)
#   nodeN.log      the node's stderr (tracing), every line prefixed with "[nodeN] "
#   nodeN.pid      the PID of the registry-node process itself
#   nodeN/data     the node's sled database (data_dir in nodeN.toml)
#   nodeN/data.before-restore.*   a data directory `restore` moved aside
#   reporter.log   the demo reporter's output, prefixed with "[reporter] "
#   reporter.pid   the PID of the demo reporter
#   tls/           with `start --tls`: what `registryctl init-cluster --tls` writes: a CA
#                  (ca.pem, ca-key.pem), each node's certificate (nodeN.pem, nodeN-key.pem:
#                  IP 127.0.0.1), a client certificate (client.pem, client-key.pem), the
#                  nodes' configs with a [tls] section (nodeN.toml, used instead of config/
#                  while tls/enabled exists); a node added later gets its certificate from
#                  the openssl command line (scripts/tls-certs.sh).
#
# Processes are only ever signalled through their recorded PID, and only after checking
# that the PID still runs the expected command line; nothing is killed by name. Every wait
# is a bounded retry loop. All traffic goes to 127.0.0.1.
#
# Environment:
#   REPORT_INTERVAL  seconds between two heartbeat batches of the demo reporter (default 10)
#   SKIP_BUILD=1     `start` uses the existing binary instead of running cargo build
#   LOG_LINES        lines per log shown by `logs` (default 30)
#   RUST_LOG         the nodes' log filter (default: info, without warp's per-request lines,
#                    which log every Raft RPC)
set -euo pipefail

# --- Layout -----------------------------------------------------------------------------

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
SCRIPT_PATH="$SCRIPT_DIR/$(basename -- "${BASH_SOURCE[0]}")"
ROOT_DIR="$(dirname -- "$SCRIPT_DIR")"
RUN_DIR="$SCRIPT_DIR/run"
BIN="${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/registry-node"

# The founding nodes (configs under run/config/, or run/tls/) and any added with `add-node`
# (configs under run/); completed by load_nodes.
NODES=(1 2 3)
# The founding nodes' configs, cluster secret and client.env (registryctl init-cluster).
CONFIG_DIR="$RUN_DIR/config"
# Node N of the founding three listens on port BASE_PORT + N.
BASE_PORT=21000
CTL="${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/registryctl"
HOST=127.0.0.1
# HTTPS: the certificates and configs of `start --tls`; on while $TLS_DIR/enabled exists.
TLS_DIR="$RUN_DIR/tls"
TLS_DAYS=30
REPORT_INTERVAL="${REPORT_INTERVAL:-10}"
NODE_LOG_FILTER="${RUST_LOG:-info,warp::filters::trace=warn}"

# Bounded waits: poll every DELAY seconds until a wall-clock deadline (a deadline rather
# than a number of tries, so that a loaded machine cannot stretch the wait).
HEALTH_TIMEOUT=10 # start-up: every node answers /health (is in a group with a leader)
STOP_TIMEOUT=10   # shutdown: per process, before SIGKILL
ELECT_TIMEOUT=10  # kill-leader: the remaining nodes agree on a new leader
DELAY=0.1

# The demo reporter's batch: three Cinder services, one POST per interval.
HEARTBEATS='[
  {"host": "node1@lvm", "binary": "cinder-volume",    "availability_zone": "nova"},
  {"host": "node1",     "binary": "cinder-scheduler", "availability_zone": "nova"},
  {"host": "node2",     "binary": "cinder-backup",    "availability_zone": "nova"}
]'

# Names (nodeN, reporter) of the processes started by this invocation; killed again by
# abort_start if the command fails before it is done.
STARTED=()

# --- Output -----------------------------------------------------------------------------

info() { printf '%s\n' "$*"; }
warn() { printf 'local-cluster: %s\n' "$*" >&2; }
die() {
  warn "$*"
  exit 1
}

usage() {
  cat <<EOF
Usage: $(basename -- "$0") COMMAND

Commands:
  start [--tls]  build registry-node, start the three nodes and the demo reporter,
                 wait until every node reports a leader, show the service list; with
                 --tls, make a CA and certificates under run/tls/ (registryctl
                 init-cluster --tls) and serve HTTPS only, nodes talking to each
                 other over mutual TLS (every other command then uses HTTPS until a
                 plain "start"); the configs come from registryctl init-cluster
  stop [N]       stop the reporter and the nodes, or node N only
                 (SIGTERM, SIGKILL after 10 s)
  status         each node's process and Raft state, then the service list
  list           the service list
  watch [ARGS]   liveness events as they happen (registryctl watch: --since POS, --json,
                 --kinds down,up, ...), resuming on the next node when one dies
  zones          availability zones: counts, disruption state, the suspect flag
  kill-leader    SIGKILL the current leader and wait for the others to elect a new one
  add-node       start a new empty node (id 4, 5, ...) and add it to the group as a voter
  remove-node N  remove node N (one added with add-node) from the group, stop it, delete
                 its config and data
  restart N      stop node N if it runs, start it again, wait for its /health (a node
                 whose data directory was deleted comes back as a new incarnation of its
                 store: the leader puts it back in place, then it is a voter again)
  restore FILE   replace every founding node's data by a backup (registryctl snapshot save):
                 checks FILE first, stops the cluster, moves each data directory aside,
                 restores nodes 1-3 from FILE into a new cluster, starts them
  logs [N|reporter] [-f]
                 the last LOG_LINES (30) lines of the logs (all nodes by default); -f follows
  clean          stop, then delete $RUN_DIR (logs and data)

Environment: REPORT_INTERVAL (default 10 s), SKIP_BUILD=1, LOG_LINES, RUST_LOG.
EOF
}

# Milliseconds since the epoch (bash 5's EPOCHREALTIME, whatever the decimal separator).
now_ms() {
  local us=${EPOCHREALTIME/[.,]/}
  printf '%s\n' $((us / 1000))
}

# Prints the deadline that lies $1 seconds from now, in now_ms units.
deadline_in() { printf '%s\n' $(($(now_ms) + $1 * 1000)); }

# True while the deadline $1 has not passed.
before() { (($(now_ms) < $1)); }

# --- Nodes, URLs and HTTP -----------------------------------------------------------------

# True while the cluster runs with TLS (started with `start --tls`).
tls_on() { [[ -f $TLS_DIR/enabled ]]; }

# The config file of node $1: under run/config/ for nodes 1-3 (under run/tls/ with TLS),
# under run/ for added ones.
node_config() {
  if tls_on && [[ -f $TLS_DIR/node$1.toml ]]; then
    printf '%s\n' "$TLS_DIR/node$1.toml"
  elif [[ -f $CONFIG_DIR/node$1.toml ]]; then
    printf '%s\n' "$CONFIG_DIR/node$1.toml"
  else
    printf '%s\n' "$RUN_DIR/node$1.toml"
  fi
}

# Adds the nodes created by `add-node` (run/nodeN.toml) to NODES.
load_nodes() {
  local f n
  for f in "$RUN_DIR"/node*.toml; do
    [[ -f $f ]] || continue
    n=${f##*/node}
    n=${n%.toml}
    [[ $n =~ ^[0-9]+$ ]] && NODES+=("$n")
  done
}

# Checks that $1 names one of the nodes.
check_node() {
  if ! [[ ${1:-} =~ ^[0-9]+$ && -f $(node_config "${1:-0}") ]]; then
    die "no such node: '${1:-}' (expected one of ${NODES[*]})"
  fi
}

# The port node $1 listens on, read from its config file (`listen = "127.0.0.1:21001"`); a
# founding node's before its config is written: BASE_PORT + N.
node_port() {
  local port
  if [[ ! -f $(node_config "$1") ]] && (($1 >= 1 && $1 <= 3)); then
    printf '%s\n' $((BASE_PORT + $1))
    return 0
  fi
  port=$(sed -n 's/^[[:space:]]*listen[[:space:]]*=[[:space:]]*"[^"]*:\([0-9][0-9]*\)".*/\1/p' \
    "$(node_config "$1")")
  [[ -n $port ]] || die "cannot read the listen port from $(node_config "$1")"
  printf '%s\n' "$port"
}

node_url() {
  local scheme=http
  tls_on && scheme=https
  printf '%s://%s:%s\n' "$scheme" "$HOST" "$(node_port "$1")"
}

# curl to the local cluster only: no proxy, bounded time, errors silent; with TLS, trusting
# the local CA only and presenting the client certificate.
http() {
  local tls=()
  tls_on && tls=(--cacert "$TLS_DIR/ca.pem" --cert "$TLS_DIR/client.pem" --key "$TLS_DIR/client-key.pem")
  curl --silent --noproxy '*' --max-time 3 "${tls[@]}" "$@"
}

# registryctl against the local cluster (with the CA and client certificate under TLS).
ctl() {
  local tls=()
  tls_on && tls=(--cacert "$TLS_DIR/ca.pem" --cert "$TLS_DIR/client.pem" --key "$TLS_DIR/client-key.pem")
  "$CTL" "${tls[@]}" "$@"
}

# --- Configs: registryctl init-cluster, as for a real deployment -------------------------------

# Writes the founding nodes' configs into $1 with `registryctl init-cluster` (with the
# further arguments given: --tls) unless they exist: nodes 1-3 on $HOST, each data directory
# run/nodeN/data (the same with and without TLS), no client tokens (a local demo). Made
# once and kept, so that a restart keeps the cluster secret and the certificates.
make_configs() {
  local out=$1 n members=()
  shift
  [[ -f $out/node1.toml ]] && return 0
  for n in 1 2 3; do members+=(--node "$n=$HOST:$((BASE_PORT + n))"); done
  "$CTL" init-cluster "${members[@]}" --out "$out" --data-dir "$RUN_DIR/node{id}/data" \
    --no-client-tokens "$@" >"$out.init-cluster.txt" 2>&1 ||
    die "registryctl init-cluster failed: $(cat -- "$out.init-cluster.txt")"
  info "wrote the configs with registryctl init-cluster: $out (summary: $out.init-cluster.txt)"
}

# The nodes' configs of the current mode (TLS or plain), made if missing.
ensure_configs() {
  if tls_on; then make_configs "$TLS_DIR" --tls --cert-days "$TLS_DAYS"; else make_configs "$CONFIG_DIR"; fi
}

# --- TLS: certificates of nodes added later (openssl) ---------------------------------------

# make_cert (with the CA init-cluster made), shared with bench/run.sh.
# shellcheck source=../scripts/tls-certs.sh
source "$SCRIPT_DIR/../scripts/tls-certs.sh"

# Writes run/tls/nodeN.toml: the config $2 of node $1 with its data_dir made absolute and a
# [tls] section (paths relative to run/tls/).
write_tls_config() {
  local n=$1 src=$2 dir
  dir=$(sed -n 's/^[[:space:]]*data_dir[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$src")
  [[ -n $dir ]] || die "cannot read data_dir from $src"
  [[ $dir == /* ]] || dir="$(dirname -- "$src")/$dir"
  {
    printf '# Node %s with TLS: %s, written by local-cluster.sh start --tls.\n' "$n" "$src"
    sed 's|^[[:space:]]*data_dir[[:space:]]*=.*|data_dir = "'"$dir"'"|' "$src"
    printf '\n[tls]\ncert = "node%s.pem"\nkey = "node%s-key.pem"\nca = "ca.pem"\n' "$n" "$n"
  } >"$TLS_DIR/node$n.toml"
}

# `start --tls`: the founding nodes' configs and certificates from init-cluster --tls; a
# certificate and a TLS config for each node added with add-node (made once; kept across
# restarts, so that the nodes keep their certificates).
setup_tls() {
  local n
  make_configs "$TLS_DIR" --tls --cert-days "$TLS_DAYS"
  for n in "${NODES[@]}"; do
    ((n > 3)) || continue
    make_cert "node$n" "node$n" "IP:$HOST,DNS:localhost"
    [[ -f $TLS_DIR/node$n.toml ]] || write_tls_config "$n" "$RUN_DIR/node$n.toml"
  done
  touch "$TLS_DIR/enabled"
}

# Fails when a node runs in the current mode (TLS or plain): switching the mode needs a
# stop first, or the script would lose track of it.
check_none_running() {
  local n
  for n in "${NODES[@]}"; do
    running_pid "node$n" >/dev/null &&
      die "node$n runs $1: run '$(basename -- "$0") stop' before switching"
  done
  return 0
}

# Prints the body of GET $2 on node $1 when it answers 200; fails otherwise.
http_get() {
  local body
  body=$(http --fail "$(node_url "$1")$2") || return 1
  printf '%s\n' "$body"
}

# Prints the given top-level fields of the JSON object on stdin, tab-separated ("-" for null).
json_fields() {
  python3 -c '
import json, sys
d = json.load(sys.stdin)
print("\t".join("-" if d.get(k) is None else str(d[k]) for k in sys.argv[1:]))
' "$@"
}

# Prints the given fields of node $1's GET /v1/cluster, tab-separated; fails if it does
# not answer.
cluster_fields() {
  local n=$1 body
  shift
  body=$(http_get "$n" /v1/cluster) || return 1
  printf '%s' "$body" | json_fields "$@"
}

# --- Processes and PID files --------------------------------------------------------------

pid_file() { printf '%s/%s.pid\n' "$RUN_DIR" "$1"; }

# The command line that the process recorded as $1 (nodeN or reporter) must be running.
expected_cmd() {
  case $1 in
    reporter) printf '%s\n' "$SCRIPT_PATH __reporter" ;;
    node*) printf '%s\n' "registry-node --config $(node_config "${1#node}")" ;;
  esac
}

# True when PID $1 is alive (not a zombie) and its command line contains $2.
pid_runs() {
  local line
  line=$(ps -ww -o stat=,args= -p "$1" 2>/dev/null) || return 1
  [[ $line != Z* && $line == *"$2"* ]]
}

# Prints the recorded PID of $1 (nodeN or reporter) if that process is still running.
running_pid() {
  local file pid
  file=$(pid_file "$1")
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] && pid_runs "$pid" "$(expected_cmd "$1")" || return 1
  printf '%s\n' "$pid"
}

# Waits until PID $1 is gone; fails if it is still there after $2 seconds.
wait_gone() {
  local pid=$1 deadline
  deadline=$(deadline_in "$2")
  while before "$deadline"; do
    pid_runs "$pid" "" || return 0
    sleep "$DELAY"
  done
  ! pid_runs "$pid" ""
}

# Stops the recorded process $1: SIGTERM, a bounded wait, SIGKILL if it is still alive.
# Removes its PID file either way.
stop_process() {
  local name=$1 pid
  if pid=$(running_pid "$name"); then
    kill -TERM "$pid" 2>/dev/null || true
    if wait_gone "$pid" "$STOP_TIMEOUT"; then
      info "stopped $name (pid $pid)"
    else
      warn "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" 2 || warn "$name (pid $pid) is still alive after SIGKILL"
    fi
  fi
  rm -f -- "$(pid_file "$name")"
}

# EXIT trap of `start` and `restart`: stops what this invocation started, then exits non-zero.
abort_start() {
  local rc=$? name
  trap - EXIT INT TERM
  if ((${#STARTED[@]} > 0)); then
    warn "aborted; stopping the processes started by this command: ${STARTED[*]}"
    for name in "${STARTED[@]}"; do stop_process "$name"; done
  fi
  exit $((rc == 0 ? 1 : rc))
}

# Arms abort_start until disarm_abort: on failure, Ctrl-C or SIGTERM, nothing half-started
# stays behind. (A plain SIGTERM would kill bash without running its EXIT trap.)
arm_abort() {
  STARTED=()
  trap abort_start EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}
disarm_abort() { trap - EXIT INT TERM; }

# Copies stdin to stdout with $1 in front of every line. Ignores SIGHUP and SIGINT so that
# it ends exactly when the node's output does (EOF), never before.
prefix_lines() {
  trap '' HUP INT
  local line
  while IFS= read -r line || [[ -n $line ]]; do
    printf '%s%s\n' "$1" "$line"
  done
}

# Starts node $1 in the background unless its recorded PID is still alive; with $2 = bootstrap,
# the node forms a new group with its peers (only ever on fresh data directories: see cmd_start).
start_node() {
  local n=$1 pid log flags=()
  if pid=$(running_pid "node$n"); then
    info "node$n already running (pid $pid)"
    return 0
  fi
  [[ ${2:-} == bootstrap ]] && flags=(--bootstrap)
  log="$RUN_DIR/node$n.log"
  printf '[node%s] ---- %s: starting (local-cluster.sh) ----\n' "$n" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$log"
  # The redirections of a background command are made in the forked child, which then
  # execs nohup, which execs the node: $! is the registry-node process itself. Its output
  # goes through the prefixer (a child of the node) that exits when the node's output ends.
  NO_COLOR=1 RUST_LOG="$NODE_LOG_FILTER" nohup "$BIN" --config "$(node_config "$n")" "${flags[@]}" </dev/null \
    > >(exec >>"$log" 2>&1; prefix_lines "[node$n] ") 2>&1 &
  pid=$!
  printf '%s\n' "$pid" >"$(pid_file "node$n")"
  STARTED+=("node$n")
  info "started node$n (pid $pid, $(node_url "$n"))"
}

# True when node $1 answers 200 on /health (it is in a cluster with a known leader).
healthy() { http --fail --output /dev/null "$(node_url "$1")/health"; }

show_log_tail() {
  local log="$RUN_DIR/node$1.log"
  [[ -f $log ]] || return 0
  warn "last lines of $log:"
  tail -n 20 -- "$log" >&2
}

# Waits (bounded) until every node given answers /health; on failure shows their logs.
wait_healthy() {
  local pending=("$@") left n deadline
  deadline=$(deadline_in "$HEALTH_TIMEOUT")
  while before "$deadline"; do
    left=()
    for n in "${pending[@]}"; do
      if ! running_pid "node$n" >/dev/null; then
        warn "node$n exited during start-up"
        show_log_tail "$n"
        return 1
      fi
      healthy "$n" || left+=("$n")
    done
    ((${#left[@]} == 0)) && return 0
    pending=("${left[@]}")
    sleep "$DELAY"
  done
  warn "no healthy answer from node(s) ${pending[*]} within ${HEALTH_TIMEOUT}s"
  for n in "${pending[@]}"; do show_log_tail "$n"; done
  return 1
}

build() {
  if [[ ${SKIP_BUILD:-0} == 1 ]]; then
    [[ -x $BIN ]] || die "SKIP_BUILD=1 but $BIN does not exist"
    return 0
  fi
  info "building registry-node and registryctl (cargo build --release -p registry-node)..."
  (cd -- "$ROOT_DIR" && cargo build --release --quiet -p registry-node) || die "build failed"
}

# --- Cluster state ------------------------------------------------------------------------

# Prints the leader id reported by the first node that answers /v1/cluster and knows one.
# Nodes in $@ (if any) are skipped.
find_leader() {
  local n leader skip
  for n in "${NODES[@]}"; do
    for skip in "$@"; do [[ $n == "$skip" ]] && continue 2; done
    leader=$(cluster_fields "$n" leader_id) || continue
    if [[ $leader != - ]]; then
      printf '%s\n' "$leader"
      return 0
    fi
  done
  return 1
}

# Prints the id of the node that itself reports role=Leader (the highest term wins if a
# deposed leader has not noticed yet). A follower's leader_id may lag behind an election;
# the leader's own word does not.
find_acting_leader() {
  local n fields role term best="" best_term=-1
  for n in "${NODES[@]}"; do
    fields=$(cluster_fields "$n" role term) || continue
    IFS=$'\t' read -r role term <<<"$fields"
    if [[ $role == Leader ]] && ((term > best_term)); then
      best=$n
      best_term=$term
    fi
  done
  [[ -n $best ]] || return 1
  printf '%s\n' "$best"
}

# One line per node: its process and, if it answers, its Raft state.
print_nodes() {
  local n pid proc fields state role term leader applied last_log records last
  for n in "${NODES[@]}"; do
    if pid=$(running_pid "node$n"); then proc="pid $pid"; else proc="not running"; fi
    state="no answer"
    if fields=$(cluster_fields "$n" role term leader_id applied_index last_log_index records); then
      IFS=$'\t' read -r role term leader applied last_log records <<<"$fields"
      state="role=$role term=$term leader=$leader applied=$applied last_log=$last_log records=$records"
    fi
    printf '  node%-2s %-6s %-16s %s\n' "$n" "$(node_port "$n")" "$proc" "$state"
  done
  if pid=$(running_pid reporter); then proc="pid $pid"; else proc="not running"; fi
  last=$(tail -n 1 -- "$RUN_DIR/reporter.log" 2>/dev/null) || last=""
  printf '  %-13s %-16s %s\n' "reporter" "$proc" "last: ${last#\[reporter\] }"
}

# Prints the services JSON from the first node that answers a linearizable read, else
# from the first one that answers a stale read (with a note on stderr).
fetch_services() {
  local n body
  for n in "${NODES[@]}"; do
    if body=$(http_get "$n" /v1/services); then
      printf '%s\n' "$body"
      return 0
    fi
  done
  for n in "${NODES[@]}"; do
    if body=$(http_get "$n" "/v1/services?consistency=stale"); then
      warn "no linearizable answer (no quorum?); stale read from node$n"
      printf '%s\n' "$body"
      return 0
    fi
  done
  return 1
}

# Renders {"services": [...]} on stdin as a table.
SERVICES_TABLE_PY='
import json, sys

services = json.load(sys.stdin)["services"]
if not services:
    print("(no services registered)")
    sys.exit(0)

from datetime import datetime

def parse(t):
    try:
        return datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:  # an older Python: fractions of other than 3 or 6 digits
        return datetime.fromisoformat(t[:19] + "+00:00")

def when(s):
    # As Cinder lists it: the newer of the last heartbeat and the last administrative change.
    times = [parse(t) for t in (s.get("updated_at"), s.get("modified_at")) if t]
    return max(times).strftime("%Y-%m-%d %H:%M:%S") if times else "-"

header = ["Binary", "Host", "Zone", "Status", "State", "Updated At", "Report Count"]
rows = [
    [s["binary"], s["host"], s.get("availability_zone") or "-", s["status"], s["state"],
     when(s), str(s["report_count"])]
    for s in sorted(services, key=lambda s: (s["binary"], s["host"]))
]
widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

def line(cells):
    return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

print(rule)
print(line(header))
print(rule)
for r in rows:
    print(line(r))
print(rule)
'

print_services() {
  local body
  body=$(fetch_services) || {
    warn "no node answered /v1/services"
    return 1
  }
  printf '%s' "$body" | python3 -c "$SERVICES_TABLE_PY"
}

# --- Demo reporter ------------------------------------------------------------------------

reporter_log() { printf '[reporter] %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

# POSTs the batch to each node in turn until one answers 200.
send_batch() {
  local n code rc
  for n in "${NODES[@]}"; do
    rc=0
    code=$(http --output /dev/null --write-out '%{http_code}' \
      --header 'Content-Type: application/json' --data "$HEARTBEATS" \
      "$(node_url "$n")/v1/heartbeats") || rc=$?
    if ((rc == 0)) && [[ $code == 200 ]]; then
      reporter_log "sent 3 heartbeats via node$n"
      return 0
    fi
    case $rc in
      0) reporter_log "node$n: HTTP $code" ;;
      7) reporter_log "node$n: connection refused" ;;
      28) reporter_log "node$n: no answer within 3s" ;;
      *) reporter_log "node$n: curl failed (exit $rc)" ;;
    esac
  done
  reporter_log "no node accepted the batch; next try in ${REPORT_INTERVAL}s"
  return 1
}

# `__reporter` (run in the background by start): one batch every REPORT_INTERVAL seconds,
# forever; never exits on errors. The first batch is sent by `start` itself.
run_reporter() {
  local sleeper=""
  trap 'reporter_log "stopping"; [[ -n $sleeper ]] && kill "$sleeper" 2>/dev/null; exit 0' TERM INT
  reporter_log "started; a batch every ${REPORT_INTERVAL}s"
  while true; do
    sleep "$REPORT_INTERVAL" &
    sleeper=$!
    wait "$sleeper" || true
    sleeper=""
    send_batch || true
  done
}

start_reporter() {
  local pid
  if pid=$(running_pid reporter); then
    info "reporter already running (pid $pid)"
    return 0
  fi
  # First batch now, so that the service list is populated when start returns.
  send_batch >>"$RUN_DIR/reporter.log" || warn "the first heartbeat batch failed (see run/reporter.log)"
  REPORT_INTERVAL="$REPORT_INTERVAL" nohup bash "$SCRIPT_PATH" __reporter </dev/null \
    >>"$RUN_DIR/reporter.log" 2>&1 &
  pid=$!
  printf '%s\n' "$pid" >"$(pid_file reporter)"
  STARTED+=(reporter)
  info "started reporter (pid $pid, a batch of 3 heartbeats every ${REPORT_INTERVAL}s)"
}

# --- Commands -----------------------------------------------------------------------------

# The data directory of node $1 (data_dir in its config, relative to the config's directory).
data_dir() {
  local dir
  dir=$(sed -n 's/^[[:space:]]*data_dir[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$(node_config "$1")")
  [[ -n $dir ]] || die "cannot read data_dir from $(node_config "$1")"
  [[ $dir == /* ]] || dir="$(dirname -- "$(node_config "$1")")/$dir"
  printf '%s\n' "$dir"
}

# True when none of the founding nodes (1-3) has a data directory yet: a new cluster.
fresh_cluster() {
  local n
  for n in 1 2 3; do [[ -e $(data_dir "$n") ]] && return 1; done
  return 0
}

cmd_start() {
  local n leader term mode="" tls=0
  case ${1:-} in
    "") ;;
    --tls) tls=1 ;;
    *) die "start takes --tls or nothing, not '$1'" ;;
  esac
  build
  mkdir -p "$RUN_DIR"
  if ((tls)); then
    tls_on || check_none_running "without TLS"
    setup_tls
  elif tls_on; then
    check_none_running "with TLS"
    rm -f -- "$TLS_DIR/enabled"
  fi
  ((tls)) || make_configs "$CONFIG_DIR"
  # Bootstrapping is a one-time act: only when no founding node has data yet. A node whose
  # data directory was deleted later starts without it and takes its old place back.
  if fresh_cluster; then
    mode=bootstrap
    info "fresh data directories: the three nodes bootstrap a new cluster (--bootstrap)"
  fi
  arm_abort
  for n in "${NODES[@]}"; do start_node "$n" "$mode"; done
  wait_healthy "${NODES[@]}" || die "the cluster did not come up"
  start_reporter
  disarm_abort

  info ""
  if tls_on; then
    info "Cluster is up over HTTPS (config: $TLS_DIR/node{1,2,3}.toml)."
    info "  CA:       $TLS_DIR/ca.pem (client: client.pem, client-key.pem)"
    info "  try:      $CTL --cacert $TLS_DIR/ca.pem service-list"
  else
    info "Cluster is up (config: $CONFIG_DIR/node{1,2,3}.toml)."
  fi
  info "  logs:     $RUN_DIR/node{1,2,3}.log, reporter.log   ($0 logs [N] [-f])"
  info "  data:     $RUN_DIR/node{1,2,3}/data"
  info "  watch:    $0 watch   (liveness events as they happen, resuming across nodes; Ctrl-C stops)"
  info "  zones:    $0 zones"
  info "  browser:  $(node_url "${NODES[0]}")/ui/   (the dashboard; every node serves it)"
  if leader=$(find_leader) && term=$(cluster_fields "$leader" term); then
    info "  leader:   node$leader ($(node_url "$leader")), term $term"
  else
    info "  leader:   unknown right now (an election is under way?)"
  fi
  info ""
  print_services
}

# `stop`: the reporter and every node; `stop N`: node N only.
cmd_stop() {
  local n
  if (($# > 0)); then
    check_node "$1"
    stop_process "node$1"
    return 0
  fi
  stop_process reporter
  for n in "${NODES[@]}"; do stop_process "node$n"; done
}

cmd_status() {
  info "Nodes:"
  print_nodes
  info ""
  info "Services:"
  print_services
}

cmd_kill_leader() {
  local leader pid new start deadline term
  leader=$(find_acting_leader) || die "no node is leader right now (no quorum, or an election is under way)"
  pid=$(running_pid "node$leader") ||
    die "node$leader is the leader but has no running recorded PID (not started by this script?)"
  kill -KILL "$pid"
  wait_gone "$pid" 2 || die "node$leader (pid $pid) survived SIGKILL"
  rm -f -- "$(pid_file "node$leader")"
  start=$(now_ms)
  deadline=$(deadline_in "$ELECT_TIMEOUT")
  info "killed leader node$leader (pid $pid) with SIGKILL"

  while before "$deadline"; do
    if new=$(find_leader "$leader") && [[ $new != "$leader" ]] && all_agree_on "$new" "$leader"; then
      term=$(cluster_fields "$new" term) || term="?"
      info "new leader: node$new (term $term), seen by every remaining node after $(($(now_ms) - start)) ms"
      return 0
    fi
    sleep "$DELAY"
  done
  die "no new leader within ${ELECT_TIMEOUT}s (do the remaining nodes still have a quorum?)"
}

# True when every running node except $2 reports $1 as its leader.
all_agree_on() {
  local n seen
  for n in "${NODES[@]}"; do
    [[ $n == "$2" ]] && continue
    running_pid "node$n" >/dev/null || continue
    seen=$(cluster_fields "$n" leader_id) || return 1
    [[ $seen == "$1" ]] || return 1
  done
}

cmd_restart() {
  local n=${1:-}
  check_node "$n"
  [[ -x $BIN ]] || build
  mkdir -p "$RUN_DIR"
  stop_process "node$n"
  arm_abort
  start_node "$n"
  wait_healthy "$n" || die "node$n did not become healthy"
  disarm_abort
  info "node$n is healthy: $(http_get "$n" /health)"
}

# Starts a new, empty node (next id, port 21000+id, without --bootstrap) and adds it to the
# group through the leader: as a learner, then as a voter.
cmd_add_node() {
  local n=$((${NODES[-1]} + 1)) port config first
  port=$((BASE_PORT + n))
  [[ -x $BIN && -x $CTL ]] || build
  mkdir -p "$RUN_DIR"
  first=$(node_config 1)
  [[ -f $first ]] || die "no config of node 1 yet: run '$(basename -- "$0") start' first"
  config="$RUN_DIR/node$n.toml"
  {
    printf '# Node %s, added by local-cluster.sh add-node.\n' "$n"
    printf 'node_id = %s\nlisten = "%s:%s"\ndata_dir = "node%s/data"\n' \
      "$n" "$HOST" "$port" "$n"
    printf '\n[[peers]]\nid = %s\naddr = "%s:%s"\n' "$n" "$HOST" "$port"
    # Same timings and auth as node 1 (init-cluster writes [raft] before the peers and
    # [auth] last); its secret file named by its absolute path.
    sed -n '/^\[raft\]/,/^\[\[peers\]\]/{/^\[\[peers\]\]/d;p}' "$first"
    sed -n '/^\[auth\]/,$p' "$first" |
      sed 's|^cluster_secret_file = "\([^/"][^"]*\)"|cluster_secret_file = "'"$(dirname -- "$first")"'/\1"|'
  } >"$config"
  if tls_on; then
    make_cert "node$n" "node$n" "IP:$HOST,DNS:localhost"
    write_tls_config "$n" "$config"
  fi
  NODES+=("$n")
  arm_abort
  start_node "$n"
  local deadline
  deadline=$(deadline_in "$HEALTH_TIMEOUT")
  until http --output /dev/null "$(node_url "$n")/v1/cluster"; do
    before "$deadline" || die "node$n did not start; see $RUN_DIR/node$n.log"
    sleep "$DELAY"
  done
  ctl --endpoints "$(endpoints_csv)" cluster add "$n" "$HOST:$port" || die "adding node$n failed"
  wait_healthy "$n" || die "node$n did not become healthy"
  disarm_abort
  info "node$n is a voter; config $config"
}

# `remove-node N`: node N (added with add-node) removed from the group through the leader,
# then stopped; its config and data deleted (a node removed never comes back as it was).
cmd_remove_node() {
  local n=${1:-} dir
  check_node "$n"
  ((n > 3)) || die "node$n is a founding node: only nodes added with add-node are removed here"
  [[ -x $CTL ]] || build
  dir=$(data_dir "$n")
  ctl --endpoints "$(endpoints_csv)" cluster remove "$n" || die "removing node$n failed"
  stop_process "node$n"
  rm -rf -- "$dir"
  rm -f -- "$RUN_DIR/node$n.toml" "$TLS_DIR/node$n.toml" "$TLS_DIR/node$n.pem" "$TLS_DIR/node$n-key.pem"
  info "node$n removed; its config and data deleted"
}

# The nodes' addresses, comma-separated, for registryctl.
endpoints_csv() {
  local n out=()
  for n in "${NODES[@]}"; do out+=("$HOST:$(node_port "$n")"); done
  local IFS=,
  printf '%s\n' "${out[*]}"
}

cmd_logs() {
  local files=() follow=() arg
  for arg in "$@"; do
    case $arg in
      -f | --follow) follow=(-F) ;;
      reporter) files+=("$RUN_DIR/reporter.log") ;;
      *)
        check_node "$arg"
        files+=("$RUN_DIR/node$arg.log")
        ;;
    esac
  done
  if ((${#files[@]} == 0)); then
    for arg in "${NODES[@]}"; do files+=("$RUN_DIR/node$arg.log"); done
  fi
  for arg in "${files[@]}"; do [[ -f $arg ]] || die "no log yet: $arg"; done
  # The lines already carry their [nodeN] prefix, so tail's file headers are not needed.
  tail -q -n "${LOG_LINES:-30}" "${follow[@]}" -- "${files[@]}"
}

# `restore FILE`: the founding nodes' data replaced by the backup FILE, as a new cluster.
cmd_restore() {
  local file=${1:-} n stamp dir out
  [[ -n $file ]] || die "usage: $(basename -- "$0") restore FILE (a backup from registryctl snapshot save)"
  [[ -f $file ]] || die "no such file: $file"
  [[ -x $BIN && -x $CTL ]] || build
  # A damaged file is refused before anything is touched.
  out=$(ctl snapshot status "$file" 2>&1) || die "refusing to restore: $out"
  info "$out"
  mkdir -p "$RUN_DIR"
  ensure_configs
  cmd_stop
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  for n in "${NODES[@]}"; do
    dir=$(data_dir "$n")
    if [[ -e $dir ]]; then
      mv -- "$dir" "$dir.before-restore.$stamp"
      info "moved node$n's data to $dir.before-restore.$stamp"
    fi
  done
  mkdir -p "$RUN_DIR"
  for n in 1 2 3; do
    "$BIN" restore --snapshot "$file" --config "$(node_config "$n")" >>"$RUN_DIR/node$n.log" 2>&1 ||
      die "restoring node$n failed; see $RUN_DIR/node$n.log (the old data is in *.before-restore.$stamp)"
  done
  for n in "${NODES[@]}"; do
    ((n > 3)) && warn "node$n (added with add-node) is not part of the restored cluster; its data is in $(data_dir "$n").before-restore.$stamp"
  done
  NODES=(1 2 3)
  arm_abort
  for n in "${NODES[@]}"; do start_node "$n"; done
  wait_healthy "${NODES[@]}" || die "the restored cluster did not come up"
  start_reporter
  disarm_abort
  info ""
  info "Restored from $file into a new cluster:"
  cmd_status
}

cmd_clean() {
  cmd_stop
  rm -rf -- "${RUN_DIR:?}"
  info "removed $RUN_DIR"
}

main() {
  [[ $REPORT_INTERVAL =~ ^[0-9]+([.][0-9]+)?$ ]] ||
    die "REPORT_INTERVAL must be a number of seconds, not '$REPORT_INTERVAL'"
  local cmd=${1:-}
  (($# > 0)) && shift
  load_nodes
  case $cmd in
    start) cmd_start "$@" ;;
    add-node) cmd_add_node ;;
    remove-node) cmd_remove_node "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status ;;
    list) print_services ;;
    watch) ctl --endpoints "$(endpoints_csv)" watch "$@" ;;
    zones) ctl --endpoints "$(endpoints_csv)" zones ;;
    kill-leader) cmd_kill_leader ;;
    restart) cmd_restart "$@" ;;
    restore) cmd_restore "$@" ;;
    logs) cmd_logs "$@" ;;
    clean) cmd_clean ;;
    __reporter) run_reporter ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
