#!/usr/bin/env bash
# Soak test (not in CI): portier under steady load for SOAK_SECONDS (default 600), with a config
# swap every second (an Ingress rewritten in turn with 1 and 50 extra routes), over plain
# HTTP/1.1, TLS keep-alive and a new TLS connection per request. Samples portier's RSS every 10 s
# and fails when RSS at the end exceeds RSS after the warm-up by more than SOAK_MAX_GROWTH_MIB
# (default 16): what a leak per request, per connection or per swap would show in 10 minutes.
#
#   bash benches/soak.sh                    # 10 minutes
#   SOAK_SECONDS=60 bash benches/soak.sh    # a short look
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_TOTAL=${SOAK_SECONDS:-600}
WARMUP=${SOAK_WARMUP:-30}
MAX_GROWTH_MIB=${SOAK_MAX_GROWTH_MIB:-16}

if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --quiet --bin portier --example bench_backend
BIN=target/release

source benches/common.sh

B_HTTP=48080 B_HTTPS=48443 P_HTTP=48180 P_HTTPS=48543 P_ADMIN=48190
start_backend

mkdir "$work/manifests"
cat > "$work/manifests/web.yaml" <<YAML
$(web_service)
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  rules:
  - http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
YAML
# The Ingress that changes every second: 1 or 50 extra routes, in turn.
churn() {
  local n=$1 paths=""
  for i in $(seq "$n"); do
    paths+="      - {path: /churn-$i, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}"$'\n'
  done
  printf 'apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: churn, namespace: default}\nspec:\n  rules:\n  - host: churn.test\n    http:\n      paths:\n%s' "$paths" > "$work/churn.tmp"
  mv "$work/churn.tmp" "$work/manifests/churn.yaml"
}
churn 1

"$BIN/portier" --manifests "$work/manifests" --http-addr 127.0.0.1:$P_HTTP \
  --https-addr 127.0.0.1:$P_HTTPS --admin-addr 127.0.0.1:$P_ADMIN --no-https-redirect \
  --log-level warn & portier=$!
pids+=($portier)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$P_ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.05; done

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$portier/status"; }
swaps() { curl -s "http://127.0.0.1:$P_ADMIN/api/version" | sed -n 's/.*"generation": *\([0-9]*\).*/\1/p'; }

# Steady load, well under saturation so the machine stays responsive: a few connections each.
run_for=$((SECONDS_TOTAL + 5))
wrk -t1 -c8 -d${run_for}s "http://127.0.0.1:$P_HTTP/" > "$work/wrk-plain.txt" & pids+=($!)
wrk -t1 -c8 -d${run_for}s "https://127.0.0.1:$P_HTTPS/" > "$work/wrk-tls.txt" & pids+=($!)
# A new TLS connection per request (with the TLS handshake and its allocations each time).
( end=$((SECONDS + run_for)); n=0; while (( SECONDS < end )); do
    curl -sk -o /dev/null "https://127.0.0.1:$P_HTTPS/new-conn" && n=$((n + 1)); done; echo "$n" > "$work/newconn.txt" ) & pids+=($!)

start=$SECONDS
baseline=""
peak=0
echo "second  rss_MiB  generation"
flip=0
while (( SECONDS - start < SECONDS_TOTAL )); do
  for _ in $(seq 10); do
    flip=$((1 - flip)); churn $((flip == 1 ? 50 : 1)); sleep 1
  done
  rss=$(rss_kib)
  (( rss > peak )) && peak=$rss
  elapsed=$((SECONDS - start))
  if [[ -z "$baseline" && $elapsed -ge $WARMUP ]]; then baseline=$rss; fi
  printf '%6d  %7.1f  %s\n' "$elapsed" "$(echo "$rss / 1024" | bc -l)" "$(swaps)"
done
end_rss=$(rss_kib)
wait_for_wrk() { for f in wrk-plain wrk-tls; do sed -n 's/^Requests\/sec: *//p' "$work/$f.txt"; done; }
sleep 6
echo
echo "requests/s plain, TLS keep-alive: $(wait_for_wrk | tr '\n' ' '); new TLS connections: $(cat "$work/newconn.txt" 2>/dev/null || echo '?')"
echo "swaps: $(swaps)"
growth=$(( (end_rss - baseline) / 1024 ))
printf 'RSS after %ss warm-up %.1f MiB, at the end %.1f MiB (growth %d MiB), peak %.1f MiB; bound %d MiB\n' \
  "$WARMUP" "$(echo "$baseline / 1024" | bc -l)" "$(echo "$end_rss / 1024" | bc -l)" "$growth" \
  "$(echo "$peak / 1024" | bc -l)" "$MAX_GROWTH_MIB"
if (( growth > MAX_GROWTH_MIB )); then
  echo "FAIL: RSS grew by more than ${MAX_GROWTH_MIB} MiB" >&2
  exit 1
fi
echo "OK"
