#!/usr/bin/env bash
# Issue 8's bench: the same load generator (`magnetar-loadgen`, its own process)
# against both runtimes of the same binary in one run, `magnetar crawl --runtime
# mio` and `--runtime tokio` (LMDB store, harvesting on, wide table), alternating
# ROUNDS times so that a change in the machine's load hits both alike. Prints each
# run's answered queries/s and CPU per answered query, then the medians and the
# tokio/mio ratio of CPU per query.
#
#   runtime-tokio/scripts/bench-runtimes.sh
#   MIX=mixed ROUNDS=5 SECS=10 runtime-tokio/scripts/bench-runtimes.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${CARGO_TARGET_DIR:=target}"
cargo build --quiet --release -p magnetar --bins
R="$CARGO_TARGET_DIR/release"
MIX=${MIX:-find-node} ROUNDS=${ROUNDS:-3} SECS=${SECS:-10} PORT=${PORT:-16891}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  for rt in mio tokio; do
    "$R/magnetar" crawl --runtime "$rt" --bind 127.0.0.1:"$PORT" --allow-private \
      --per-ip-answers 1000000000 --bootstrap 127.0.0.1:9 --db "$work/db-$rt-$round" \
      --duration $((SECS + 30)) >"$work/crawl-$rt-$round.log" 2>&1 &
    pid=$!
    sleep 1
    "$R/magnetar-loadgen" --target 127.0.0.1:"$PORT" --pid "$pid" --warmup 3 \
      --duration "$SECS" --mix "$MIX" >"$work/gen-$rt-$round.txt"
    kill -TERM "$pid"
    wait "$pid" || true
    awk -v rt="$rt" -v round="$round" '
      /^mix/ {for (i=1;i<=NF;i++) if ($i=="answered") {q=$(i+1); sub("/s","",q)}}
      /^target/ {for (i=1;i<=NF;i++) if ($i=="µs") us=$(i-1); for (i=1;i<=NF;i++) if ($i=="of" && $(i+1)=="one") {c=$(i-1); sub("[(]","",c)}}
      END {printf "%s %s %s %s %s\n", round, rt, q, us, c}' "$work/gen-$rt-$round.txt" >>"$work/results.txt"
    tail -n 1 "$work/results.txt" | awk -v mix="$MIX" '{printf "round %s, %s, %s: %s answered/s, %s µs CPU per answered query, node at %s of a core\n", $1, $2, mix, $3, $4, $5}'
  done
done
awk -v mix="$MIX" '
  function median(a, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) {t = a[i]; a[i] = a[j]; a[j] = t}
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  $2 == "mio" {m[++nm] = $4; mq[nm] = $3; r[$1] = $4}
  $2 == "tokio" {t[++nt] = $4; tq[nt] = $3; if (r[$1] > 0) ratio[++nr] = $4 / r[$1]}
  END {
    lo = hi = ratio[1]; for (i = 2; i <= nr; i++) {if (ratio[i] < lo) lo = ratio[i]; if (ratio[i] > hi) hi = ratio[i]}
    mm = median(m, nm); tm = median(t, nt)
    printf "%s, %d rounds: median µs CPU per answered query mio %.2f, tokio %.2f; tokio/mio %.2f (per round %.2f–%.2f); median answered/s mio %.0f, tokio %.0f\n",
      mix, nm, mm, tm, tm / mm, lo, hi, median(mq, nm), median(tq, nt)
  }' "$work/results.txt"
