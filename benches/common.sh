# Shared by benches/load.sh and benches/soak.sh (sourced): a work folder cleaned up on exit with
# the processes started, our backend (benches/backend.rs), and the Service it stands behind.

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# start_backend [taskset CPU list]: the backend ($BIN/examples/bench_backend) on $B_HTTP (plain) and $B_HTTPS (TLS, writing its
# certificate and key into $work), started and ready.
start_backend() {
  local pin=()
  [[ -n "${1:-}" ]] && pin=(taskset -c "$1")
  "${pin[@]}" "$BIN/examples/bench_backend" "$B_HTTP" "$B_HTTPS" "$work" & pids+=($!)
  for _ in $(seq 100); do [[ -s "$work/key.pem" ]] && break; sleep 0.05; done
}

# service NAME PORT_NAME PORT TARGET_PORT: a Service and its EndpointSlice on 127.0.0.1.
service() {
  cat <<YAML
apiVersion: v1
kind: Service
metadata: {name: $1, namespace: default}
spec: {ports: [{name: $2, port: $3}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $1-1, namespace: default, labels: {kubernetes.io/service-name: $1}}
addressType: IPv4
ports: [{name: $2, port: $4}]
endpoints: [{addresses: ["127.0.0.1"]}]
YAML
}

# web_service: the Service `web`, pointing at the plain backend.
web_service() { service web http 80 "$B_HTTP"; }
