#!/usr/bin/env bash
# Tessera against etcd, on one machine, with the same closed-loop load generator.
#
# Starts a three-member etcd cluster on loopback (free ports, data in a temporary directory,
# fsync on as etcd does by default), runs `tessera bench --target etcd` with 1, 16 and 128
# clients writing 128 B values, stops it, then does the same with three `tessera node`
# processes and `--target tessera`, and prints one table. The processes and the directory are
# removed however the script ends.
#
# Everything runs on one machine: the load generator, all three members and their disks share
# its cores, so the figures compare systems on equal footing, not what either does on a real
# cluster.
#
# Settings (environment):
#   BENCH_DURATION    how long each run lasts (default 10s)
#   BENCH_CLIENTS     concurrency levels, space-separated (default "1 16 128")
#   BENCH_VALUE_BYTES value size (default 128)
#   BENCH_READ_RATIO  share of reads, 0.0 to 1.0 (default 0.0: writes only, the fsync path)
#   BENCH_KEY_SPACE   distinct keys (default 100000)
#   BENCH_TESSERA_REGIONS  regions the Tessera cluster starts with (default 3)
#   BENCH_TESSERA_CONFIG   extra keys for every node's file, e.g. "raft_pool_size = 1"
#   BENCH_TESSERA_BIN the tessera binary to run (default: build this checkout in release),
#                     to compare two builds against the same etcd
#   BENCH_DIR         where the temporary directory goes (default $TMPDIR or /tmp); it
#                     must be on the disk you mean to measure, not on tmpfs
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${BENCH_DURATION:-10s}"
read -r -a client_counts <<<"${BENCH_CLIENTS:-1 16 128}"
value_bytes="${BENCH_VALUE_BYTES:-128}"
read_ratio="${BENCH_READ_RATIO:-0.0}"
key_space="${BENCH_KEY_SPACE:-100000}"

# --- Tools --------------------------------------------------------------------------------

if ! command -v etcd >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "etcd is missing; installing Debian's etcd-server" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
  else
    echo "etcd is not installed (on Debian: apt-get install etcd-server)" >&2
    exit 1
  fi
fi
if command -v jq >/dev/null 2>&1; then
  json_field() { jq -r "$2" "$1"; }
elif command -v python3 >/dev/null 2>&1; then
  # The same dotted paths as jq's, for the few this script reads.
  json_field() {
    python3 -c '
import json, sys
value = json.load(open(sys.argv[1]))
for part in sys.argv[2].strip(".").split("."):
    value = value.get(part) if isinstance(value, dict) else None
print("null" if value is None else value)' "$1" "$2"
  }
else
  echo "reading the bench's JSON needs jq or python3" >&2
  exit 1
fi

if [[ -n "${BENCH_TESSERA_BIN:-}" ]]; then
  tessera="$BENCH_TESSERA_BIN"
else
  # The same build directory as scripts/test.sh, so the release build is shared with it.
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera/target}"
  cargo build --release --quiet --bin tessera
  tessera="$CARGO_TARGET_DIR/release/tessera"
fi

# --- Scratch space and cleanup ---------------------------------------------------------------

scratch="$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/etcd-vs-tessera.XXXXXX")"
pids=()
bench_pid=""
cleanup() {
  local status=$?
  # The data is thrown away, so nothing needs flushing: kill outright. A graceful stop would
  # make etcd's leader try to hand off leadership to members that are already gone, which
  # stalls for seconds.
  for pid in "${pids[@]}" $bench_pid; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}" $bench_pid; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$scratch"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

filesystem="$(stat -f -c %T "$scratch")"
if [[ "$filesystem" == tmpfs ]]; then
  echo "warning: $scratch is on tmpfs, where fsync costs nothing; set BENCH_DIR to a real disk" >&2
fi

# A port nobody listens on now. Another process could take it before etcd binds it; then
# etcd fails to start and the health wait below says so.
used_ports=" "
free_port() {
  local port
  while true; do
    port=$((20000 + RANDOM % 40000))
    [[ "$used_ports" == *" $port "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      used_ports+="$port "
      echo "$port"
      return
    fi
  done
}

# --- etcd ----------------------------------------------------------------------------------

member_count=3
client_ports=()
peer_ports=()
initial_cluster=""
for member in $(seq 1 "$member_count"); do
  client_ports+=("$(free_port)")
  peer_ports+=("$(free_port)")
  initial_cluster+="${initial_cluster:+,}m$member=http://127.0.0.1:${peer_ports[-1]}"
done
for member in $(seq 1 "$member_count"); do
  client_url="http://127.0.0.1:${client_ports[member - 1]}"
  peer_url="http://127.0.0.1:${peer_ports[member - 1]}"
  etcd --name "m$member" \
    --data-dir "$scratch/m$member" \
    --listen-client-urls "$client_url" --advertise-client-urls "$client_url" \
    --listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" \
    --initial-cluster "$initial_cluster" --initial-cluster-state new \
    --initial-cluster-token "etcd-vs-tessera-$$" \
    >"$scratch/m$member.log" 2>&1 &
  pids+=($!)
done
etcd_endpoints="$(printf '127.0.0.1:%s,' "${client_ports[@]}")"
etcd_endpoints="${etcd_endpoints%,}"

# Waits until one request through `tessera bench` succeeds against a cluster, or fails the
# script with the cluster's logs after 30 attempts of at most 5 s each. For etcd, the
# bench's connect step makes a linearizable read on every endpoint, so success means every
# member is up and there is a leader; Tessera's client waits out the first elections by
# itself. Then a short discarded run warms the cluster (every region elected, connections
# and caches made), so that none of that lands in the first measured run.
wait_healthy() {
  local system="$1" endpoints="$2" logs="$3" attempt
  for attempt in $(seq 1 30); do
    if timeout 5 "$tessera" bench --target "$system" --endpoints "$endpoints" --ops 1 \
      --concurrency 1 >/dev/null 2>&1; then
      "$tessera" bench --target "$system" --endpoints "$endpoints" --duration 2s --concurrency 16 \
        --value-bytes "$value_bytes" --key-space "$key_space" >/dev/null 2>&1 || true
      return
    fi
    sleep 0.5
  done
  echo "$system did not become healthy after 30 attempts; its logs:" >&2
  # The glob is meant to expand here.
  # shellcheck disable=SC2086
  tail -n 20 $logs >&2
  exit 1
}

wait_healthy etcd "$etcd_endpoints" "$scratch/m*.log"

echo "etcd $(etcd --version | sed -n 's/^etcd Version: //p'), $member_count members on" \
  "127.0.0.1 ($etcd_endpoints), data on $filesystem, $(nproc) cores;" \
  "$duration per run, ${value_bytes} B values, read ratio $read_ratio, $key_space keys"

results=()

# --- Tessera -------------------------------------------------------------------------------

tessera_regions="${BENCH_TESSERA_REGIONS:-3}"
tessera_endpoints=""
tessera_pids=()

# Three `tessera node` processes on loopback, the way etcd is started above: free ports,
# data in the scratch directory, fsync on (Tessera has no way to turn it off).
start_tessera() {
  local raft_ports=() kv_ports=() peers="" node
  for node in 1 2 3; do
    raft_ports+=("$(free_port)")
    kv_ports+=("$(free_port)")
    peers+=$'\n[[peers]]\n'"store_id = $node"$'\n'"raft_address = \"127.0.0.1:${raft_ports[-1]}\""$'\n'
  done
  for node in 1 2 3; do
    cat >"$scratch/tessera-$node.toml" <<TOML
store_id = $node
data_dir = "$scratch/tessera-$node"
raft_address = "127.0.0.1:${raft_ports[node - 1]}"
kv_address = "127.0.0.1:${kv_ports[node - 1]}"
regions_len = $tessera_regions
${BENCH_TESSERA_CONFIG:-}
$peers
TOML
    "$tessera" --log-level warn node --config "$scratch/tessera-$node.toml" \
      >"$scratch/tessera-$node.log" 2>&1 &
    pids+=($!)
    tessera_pids+=($!)
  done
  tessera_endpoints="$(printf '127.0.0.1:%s,' "${kv_ports[@]}")"
  tessera_endpoints="${tessera_endpoints%,}"
  wait_healthy tessera "$tessera_endpoints" "$scratch/tessera-*.log"
}

stop_tessera() {
  local pid
  for pid in "${tessera_pids[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  tessera_pids=()
}

# One run against either system, with the same flags.
bench_run() {
  local system="$1" endpoints="$2" clients="$3"
  local output="$scratch/$system-$clients.json"
  # In the background and waited for, because bash runs a trap only after the foreground
  # command ends, while `wait` returns at once on a signal: Ctrl-C then cleans up right away.
  "$tessera" bench --target "$system" --endpoints "$endpoints" --concurrency "$clients" \
    --duration "$duration" --value-bytes "$value_bytes" --read-ratio "$read_ratio" \
    --key-space "$key_space" --json >"$output" 2>"$scratch/$system-$clients.progress" &
  bench_pid=$!
  if ! wait "$bench_pid"; then
    cat "$scratch/$system-$clients.progress" >&2
    exit 1
  fi
  bench_pid=""
  results+=("$(table_row "$system" "$clients" "$output")")
}

# --- Runs and table ------------------------------------------------------------------------

# One tab-separated row of the table from a bench's JSON report; latencies in milliseconds.
table_row() {
  local system="$1" clients="$2" output="$3" row field value
  row="$system\t$clients\t$(printf '%.0f' "$(json_field "$output" .throughput_ops_per_sec)")"
  for field in p50_us p99_us p999_us; do
    value="$(json_field "$output" ".latency.$field")"
    if [[ "$value" == null ]]; then
      row+="\t-"
    else
      row+="\t$(awk -v latency_us="$value" 'BEGIN { printf "%.3f", latency_us / 1000 }')"
    fi
  done
  row+="\t$(json_field "$output" .errors_total)"
  printf '%b' "$row"
}

# etcd runs alone, then stops; Tessera then runs alone, so neither shares the machine with
# the other's idle cluster.
for clients in "${client_counts[@]}"; do
  echo "etcd, $clients clients..." >&2
  bench_run etcd "$etcd_endpoints" "$clients"
done
for pid in "${pids[@]}"; do
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
done
pids=()
start_tessera
echo "tessera, 3 nodes ($tessera_endpoints), $tessera_regions regions" >&2
for clients in "${client_counts[@]}"; do
  echo "tessera, $clients clients..." >&2
  bench_run tessera "$tessera_endpoints" "$clients"
done
stop_tessera

echo
printf '| %-7s | %7s | %10s | %8s | %8s | %8s | %6s |\n' \
  system clients "ops/s" "p50 ms" "p99 ms" "p999 ms" errors
printf '|%s|\n' "---------|---------|------------|----------|----------|----------|--------"
for row in "${results[@]}"; do
  IFS=$'\t' read -r system clients throughput p50 p99 p999 errors <<<"$row"
  printf '| %-7s | %7s | %10s | %8s | %8s | %8s | %6s |\n' \
    "$system" "$clients" "$throughput" "$p50" "$p99" "$p999" "$errors"
done
echo "Errors are not comparable between the columns: Tessera's client retries what may succeed"
echo "later (elections, busy, lost connections) for up to 20 s; the etcd target does not retry."
