#!/usr/bin/env bash
# Load bench for the mio runtime: answered KRPC queries/s, CPU per query, RSS.
#
#   app/scripts/bench-load.sh            # find_node load from 3 generators
#   MIX=ping GENS=2 SECS=20 app/scripts/bench-load.sh
#   TABLE=1 app/scripts/bench-load.sh    # 8,000-node table + 1,000 leeches: RSS
#   FLOOR=0 …                                    # skip the bare-responder floor run
#
# First (unless FLOOR=0) the same generators load a bare KRPC responder
# (`magnetar-loadgen --serve`): the kernel's UDP cost per query on this machine,
# which bounds any crawler here. The ratio of the two CPU-per-query figures is
# printed at the end.
#
# The crawler runs with a hidden --per-ip-answers so loopback sources are not rate
# limited (the default is 10 answers per IP per second).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${CARGO_TARGET_DIR:=target}"
cargo build --release -p magnetar --bins >/dev/null
R="$CARGO_TARGET_DIR/release"
MIX=${MIX:-find-node} GENS=${GENS:-3} SECS=${SECS:-10} PORT=${PORT:-16881}
db=$(mktemp -d)
trap 'rm -rf "$db"' EXIT

# Runs the generators against whatever listens on $PORT (pid $1), prints their
# lines and one combined line, and leaves the µs of CPU per query in $db/us.$2.
load() {
  local pid=$1 name=$2
  rm -f "$db"/gen*.txt
  local gens=()
  for g in $(seq 1 "$GENS"); do
    "$R/magnetar-loadgen" --target 127.0.0.1:$PORT --pid "$pid" --sockets 64 --window 400 \
      --warmup 2 --duration "$SECS" --mix "$MIX" --ip-base "$g" >"$db/gen$g.txt" &
    gens+=($!)
  done
  wait "${gens[@]}" || true
  cat "$db"/gen*.txt
  # Per-generator "cpu per answered query" divides the target's whole CPU by one
  # generator's answers; the combined figure is below.
  awk -v name="$name" -v out="$db/us.$name" '/^mix/ {for (i=1;i<=NF;i++) if ($i=="answered") {gsub("/s,","",$(i+1)); s+=$(i+1)}}
       /^target/ && !c {for (i=1;i<=NF;i++) if ($i=="cpu" && !c) {c=$(i+1); sub("s","",c)}; for (i=1;i<=NF;i++) if ($i=="over") {t=$(i+1); sub("s","",t)}}
       END {us=1e6*c/(s*t); printf "%s: total answered: %.0f/s; target cpu %.2fs over %.1fs (%.0f%% of one core); %.2f us cpu per answered query (one-core ceiling %.0f k/s)\n", name, s, c, t, 100*c/t, us, 1000/us; print us > out}' "$db"/gen*.txt
}

if [ "${FLOOR:-1}" = 1 ] && [ "${TABLE:-0}" != 1 ]; then
  # The floor first: a bare responder, same generators, same port.
  "$R/magnetar-loadgen" --target 127.0.0.1:9 --serve 127.0.0.1:$PORT --warmup 2 \
    --duration "$SECS" >"$db/floor.log" 2>&1 &
  fpid=$!
  sleep 0.5
  load $fpid floor
  kill -TERM $fpid 2>/dev/null; wait $fpid 2>/dev/null || true
fi

"$R/magnetar" crawl --bind 127.0.0.1:$PORT --allow-private --per-ip-answers 1000000000 \
  --bootstrap 127.0.0.1:9 --db "$db" --duration $((SECS + 30)) --metrics 127.0.0.1:0 \
  >"$db/crawl.log" 2>&1 &
pid=$!
sleep 1
if [ "${TABLE:-0}" = 1 ]; then
  "$R/magnetar-loadgen" --target 127.0.0.1:$PORT --pid $pid --sockets 8000 --window 512 \
    --warmup 10 --duration "$SECS" --mix "$MIX" --announce 400
  grep -h "metrics at" "$db/crawl.log" | sed 's/.*http:\/\///' | while read -r url; do
    curl -s "http://$url" | grep -E '^(magnetar_nodes|magnetar_runtime_tcp_open|process_resident_memory_bytes) '
  done
else
  load $pid magnetar
  if [ -f "$db/us.floor" ]; then
    awk -v f="$(cat "$db/us.floor")" -v m="$(cat "$db/us.magnetar")" \
      'BEGIN {printf "magnetar / bare responder CPU per query: %.2f (%.2f vs %.2f us)\n", m/f, m, f}'
  fi
fi
grep VmHWM /proc/$pid/status || true
kill -TERM $pid; wait $pid
