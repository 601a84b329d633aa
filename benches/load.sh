#!/usr/bin/env bash
# Load benchmark: portier against nginx in the same run, interleaved A B A B, pinned the same way:
# the proxy on CPU 0, the load generator (wrk) and our backend on CPU 1.
#
#   bash benches/load.sh                 # full run: ROUNDS=3 rounds of DURATION=10 s per scenario
#   BENCH_SMOKE=1 bash benches/load.sh   # a few seconds, to keep the script working (CI runs this)
#   SCENARIOS="plain-http1 tls-keepalive" bash benches/load.sh   # only these scenarios
#   PACE_MS=3 bash benches/load.sh       # the paced scenarios' wait between requests, per connection
#
# Scenarios: plain HTTP/1.1 keep-alive; TLS termination (HTTPS keep-alive → HTTP backend); a new TLS
# connection per request; re-encrypt (HTTPS entry → HTTPS backend, pooled); a 1 MiB response;
# and direct to the backend (no proxy), the physical limit. The paced scenarios (plain and TLS)
# offer both proxies the same load, below what either can serve: each connection waits PACE_MS
# between a response and its next request, so the latencies compare at equal load rather than at
# saturation. Reported per scenario and proxy: req/s,
# p50/p99/p99.9 latency, requests per proxy CPU-second, and the ratios portier/nginx. Peak RSS of
# each proxy at the end. Medians over the rounds.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
if [[ -n "${BENCH_SMOKE:-}" ]]; then ROUNDS=1; DURATION=1; CONNS=8; fi
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

if ! command -v nginx >/dev/null 2>&1 || ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
# BENCH_PROFILE=debug: reuse the debug build (CI's smoke run, after `cargo test` built it).
BENCH_PROFILE=${BENCH_PROFILE:-release}
if [[ "$BENCH_PROFILE" == release ]]; then
  cargo build --release --quiet --bin portier --example bench_backend
else
  cargo build --quiet --bin portier --example bench_backend
fi
BIN=target/$BENCH_PROFILE

source benches/common.sh

B_HTTP=47080 B_HTTPS=47443 P_HTTP=47180 P_HTTPS=47543 P_ADMIN=47190 N_HTTP=47280 N_HTTPS=47643

start_backend "$LOAD_CPU"

mkdir "$work/manifests"
cat > "$work/manifests/bench.yaml" <<YAML
$(web_service)
---
$(service webtls https 443 "$B_HTTPS")
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bench
  namespace: default
  annotations: {portier.io/insecure-skip-verify: "true"}
spec:
  rules:
  - host: tls.bench
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: webtls, port: {number: 443}}}}]}
  - http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
YAML

cat > "$work/nginx.conf" <<NGINX
# A production-like nginx for one pinned core: one worker, upstream keepalive, no access log,
# the same certificate as portier, TLS 1.2/1.3 with session cache and tickets.
worker_processes 1;
master_process off;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream web { server 127.0.0.1:$B_HTTP; keepalive 128; }
  upstream webtls { server 127.0.0.1:$B_HTTPS; keepalive 128; }
  ssl_certificate $work/cert.pem;
  ssl_certificate_key $work/key.pem;
  ssl_protocols TLSv1.2 TLSv1.3;
  # The suites portier offers, in the order portier prefers them for a client with AES hardware
  # (wrk's OpenSSL lists AES-256 first): both proxies negotiate the same one.
  ssl_prefer_server_ciphers on;
  ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;
  ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
  ssl_session_cache shared:SSL:10m;
  ssl_session_tickets on;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host \$host;
  proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto \$scheme;
  proxy_set_header X-Real-IP \$remote_addr;
  server {
    listen 127.0.0.1:$N_HTTP;
    listen 127.0.0.1:$N_HTTPS ssl http2;
    location / { proxy_pass http://web; }
  }
  server {
    listen 127.0.0.1:$N_HTTPS ssl;
    server_name tls.bench;
    location / { proxy_pass https://webtls; proxy_ssl_session_reuse on; proxy_ssl_server_name off; }
  }
}
NGINX

taskset -c "$PROXY_CPU" "$NGINX" -c "$work/nginx.conf" -p "$work" -e "$work/nginx-error.log" & NGINX_PID=$!; pids+=($NGINX_PID)
taskset -c "$PROXY_CPU" "$BIN/portier" --manifests "$work/manifests" \
  --http-addr 127.0.0.1:$P_HTTP --https-addr 127.0.0.1:$P_HTTPS --admin-addr 127.0.0.1:$P_ADMIN \
  --no-https-redirect --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --log-level warn & PORTIER_PID=$!; pids+=($PORTIER_PID)

for port in $P_HTTP $N_HTTP $B_HTTP; do
  for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.05; done
done
curl -sf -o /dev/null "http://127.0.0.1:$P_HTTP/" || { echo "portier does not answer" >&2; exit 1; }
curl -sf -o /dev/null "http://127.0.0.1:$N_HTTP/" || { echo "nginx does not answer" >&2; cat "$work/nginx-error.log" >&2; exit 1; }
curl -skf -o /dev/null -H 'Host: tls.bench' "https://127.0.0.1:$P_HTTPS/" || { echo "portier re-encrypt route fails" >&2; exit 1; }
curl -skf -o /dev/null -H 'Host: tls.bench' "https://127.0.0.1:$N_HTTPS/" || { echo "nginx re-encrypt route fails" >&2; exit 1; }
for port in $P_HTTPS $N_HTTPS; do
  suite=$(openssl s_client -connect "127.0.0.1:$port" </dev/null 2>/dev/null | awk '/^New, /{print $NF}')
  echo "TLS on port $port: $suite" >&2
done

cat > "$work/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %.1f %d %d %d %d\n", summary.requests,
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), e.connect + e.read + e.write + e.status + e.timeout))
end
LUA
PACE_MS=${PACE_MS:-3}
{ cat "$work/report.lua"; echo "delay = function() return $PACE_MS end"; } > "$work/paced.lua"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)
results="$work/results.txt"
: > "$results"

# run SCENARIO PROXY PID URL [wrk args...]; paced scenarios (named *-paced) wait between requests.
run() {
  local scenario=$1 proxy=$2 pid=$3 url=$4; shift 4
  local before after out script=$work/report.lua
  [[ $scenario == *-paced ]] && script=$work/paced.lua
  before=$([[ $pid != - ]] && cpu_ticks "$pid" || echo 0)
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$script" "$@" "$url" | grep '^RESULT')
  after=$([[ $pid != - ]] && cpu_ticks "$pid" || echo 0)
  echo "$scenario $proxy $out $((after - before))" >> "$results"
}

scenario() {
  local name=$1 path=$2 scheme=$3; shift 3
  [[ -z "${SCENARIOS:-}" || " $SCENARIOS " == *" $name "* ]] || return 0
  local p_port n_port
  if [[ $scheme == https ]]; then p_port=$P_HTTPS n_port=$N_HTTPS; else p_port=$P_HTTP n_port=$N_HTTP; fi
  run "$name" portier "$PORTIER_PID" "$scheme://127.0.0.1:$p_port$path" "$@"
  run "$name" nginx "$NGINX_PID" "$scheme://127.0.0.1:$n_port$path" "$@"
}

for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  run direct backend - "http://127.0.0.1:$B_HTTP/"
  scenario plain-http1 / http
  scenario tls-keepalive / https
  scenario tls-new-conn / https -H "Connection: close"
  scenario reencrypt / https -H "Host: tls.bench"
  scenario 1mib-response /1m http
  scenario plain-paced / http
  scenario tls-paced / https
done

hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
echo "peak RSS: portier $(( $(hwm $PORTIER_PID) / 1024 )) MiB, nginx $(( $(hwm $NGINX_PID) / 1024 )) MiB"

python3 - "$results" "$TICKS" "$ROUNDS" "$DURATION" "$CONNS" <<'PY'
import statistics, sys
path, ticks, rounds, duration, conns = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rows = {}
for line in open(path):
    f = line.split()
    scenario, proxy = f[0], f[1]
    requests, rps, p50, p99, p999, errors, cpu = int(f[3]), float(f[4]), int(f[5]), int(f[6]), int(f[7]), int(f[8]), int(f[9])
    per_cpu = requests / (cpu / ticks) if cpu else float("nan")
    rows.setdefault((scenario, proxy), []).append((rps, p50, p99, p999, per_cpu, errors))
med = lambda xs: statistics.median(xs)
print(f"\n{rounds} round(s) x {duration}s, {conns} connections, wrk -t1; medians. Latencies in microseconds.")
print(f"{'scenario':<15} {'proxy':<8} {'req/s':>10} {'p50':>7} {'p99':>7} {'p99.9':>7} {'req/CPU-s':>10} {'errors':>6}  {'portier/nginx req/s':>19} {'req/CPU-s':>9} {'p99':>5}")
order = ["direct", "plain-http1", "tls-keepalive", "tls-new-conn", "reencrypt", "1mib-response", "plain-paced", "tls-paced"]
for scenario in order:
    for proxy in ["backend", "portier", "nginx"]:
        r = rows.get((scenario, proxy))
        if not r:
            continue
        rps, p50, p99, p999, per_cpu = (med([x[i] for x in r]) for i in range(5))
        errors = sum(x[5] for x in r)
        ratio = ""
        if proxy == "portier" and (scenario, "nginx") in rows:
            n = rows[(scenario, "nginx")]
            ratio = f"{rps / med([x[0] for x in n]):>19.2f} {per_cpu / med([x[4] for x in n]):>9.2f} {p99 / med([x[2] for x in n]):>5.2f}"
        cpu = "" if proxy == "backend" else f"{per_cpu:>10.0f}"
        print(f"{scenario:<15} {proxy:<8} {rps:>10.0f} {p50:>7.0f} {p99:>7.0f} {p999:>7.0f} {cpu:>10} {errors:>6}  {ratio}")
PY
