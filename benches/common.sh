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

# web_service: the Service `web` and its EndpointSlice, pointing at the plain backend.
web_service() {
  cat <<YAML
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: $B_HTTP}]
endpoints: [{addresses: ["127.0.0.1"]}]
YAML
}
