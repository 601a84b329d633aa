#!/usr/bin/env bash
# Headless-browser tests of the admin dashboard (src/admin/dashboard.html).
#
# Builds portier, starts it on free loopback ports over a temporary manifests folder (a
# PathPrefixStrip route /portier to the admin address itself, a few ordinary routes, a TLS Secret
# expiring soon, and two refused Ingresses), then runs `node --test` against it with
# playwright-core driving Debian's /usr/bin/chromium. portier is stopped on exit.
#
#   bash tests/browser/run.sh               # the tests
#   bash tests/browser/run.sh screenshot    # also save target/dashboard.png
#   bash tests/browser/run.sh serve         # only start portier with the test manifests
#
# Needs: cargo, node >= 20 with npm, chromium (apt-get install chromium), openssl.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

export CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM_PATH" ]; then
  echo "tests/browser: $CHROMIUM_PATH not found (apt-get install chromium)" >&2
  exit 1
fi

if [ -z "${PORTIER_SKIP_BUILD:-}" ]; then
  echo "== cargo build"
  cargo build -q
fi
bin="${CARGO_TARGET_DIR:-$root/target}/debug/portier"

work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Three distinct free ports, held open together while they are chosen.
read -r http_port https_port admin_port < <(node -e '
  const net = require("net");
  const servers = [0, 1, 2].map(() => net.createServer());
  Promise.all(servers.map((s) => new Promise((ok) => s.listen(0, "127.0.0.1", ok)))).then(() => {
    console.log(servers.map((s) => s.address().port).join(" "));
    servers.forEach((s) => s.close());
  });')

# The shop backend is 127.0.0.1:1, where nothing listens (a privileged port no test binds): its
# connections are refused, so the dashboard has a failing backend and 502s to show.
dead_port=1
mkdir -p "$work/manifests"
m="$work/manifests"

# (a) portier's own admin address behind https://<node>/portier/ (as examples/portier-dashboard.yaml).
cat >"$m/portier-admin.yaml" <<EOF
apiVersion: v1
kind: Service
metadata: {name: portier-admin, namespace: default}
spec:
  type: ExternalName
  externalName: localhost
  ports: [{name: http, port: $admin_port}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: portier-admin
  namespace: default
  annotations:
    traefik.ingress.kubernetes.io/rule-type: PathPrefixStrip
spec:
  rules:
  - http:
      paths:
      - path: /portier
        pathType: ImplementationSpecific
        backend: {service: {name: portier-admin, port: {number: $admin_port}}}
EOF

# (b) ordinary routes: a host with TLS and a dead backend, a rewrite, an Exact path, a missing Service.
openssl req -x509 -newkey rsa:2048 -nodes -days 10 -subj "/CN=shop.example.com" \
  -addext "subjectAltName=DNS:shop.example.com,DNS:www.shop.example.com" \
  -keyout "$work/shop.key" -out "$work/shop.crt" 2>/dev/null
cat >"$m/shop.yaml" <<EOF
apiVersion: v1
kind: Secret
metadata: {name: shop-tls, namespace: shop}
type: kubernetes.io/tls
data:
  tls.crt: $(base64 -w0 <"$work/shop.crt")
  tls.key: $(base64 -w0 <"$work/shop.key")
---
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: shop}
spec:
  ports: [{name: http, port: 80, targetPort: $dead_port}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: shop-abc
  namespace: shop
  labels: {kubernetes.io/service-name: shop}
addressType: IPv4
ports: [{name: http, port: $dead_port}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {ready: true}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: shop}
spec:
  tls:
  - hosts: [shop.example.com]
    secretName: shop-tls
  rules:
  - host: shop.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: shop, port: {number: 80}}}
      - path: /healthz
        pathType: Exact
        backend: {service: {name: shop, port: {number: 80}}}
EOF

cat >"$m/api.yaml" <<EOF
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec:
  type: ExternalName
  externalName: localhost
  ports: [{name: http, port: $admin_port}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: api
  namespace: default
  annotations:
    ingress.kubernetes.io/rewrite-target: /api
spec:
  rules:
  - host: api.example.com
    http:
      paths:
      - path: /v1
        pathType: Prefix
        backend: {service: {name: api, port: {number: $admin_port}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: grafana
  namespace: monitoring
  annotations:
    traefik.ingress.kubernetes.io/rule-type: PathPrefixStrip
spec:
  rules:
  - http:
      paths:
      - path: /grafana
        pathType: ImplementationSpecific
        backend: {service: {name: grafana, port: {number: 3000}}}
EOF

# (c) refused Ingresses: an unknown rule type, and an access-control annotation.
cat >"$m/refused.yaml" <<EOF
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: legacy-regex
  namespace: default
  annotations:
    traefik.ingress.kubernetes.io/rule-type: Regex
spec:
  rules:
  - host: legacy.example.com
    http:
      paths:
      - path: /old
        pathType: ImplementationSpecific
        backend: {service: {name: api, port: {number: $admin_port}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: private
  namespace: default
  annotations:
    ingress.kubernetes.io/auth-type: basic
    ingress.kubernetes.io/auth-secret: private-users
spec:
  rules:
  - host: private.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: api, port: {number: $admin_port}}}
EOF

echo "== portier on http :$http_port, https :$https_port, admin :$admin_port"
"$bin" --manifests "$m" \
  --http-addr "127.0.0.1:$http_port" --https-addr "127.0.0.1:$https_port" \
  --admin-addr "127.0.0.1:$admin_port" --log-level warn >"$work/portier.log" 2>&1 &
pid=$!

ready=""
for _ in $(seq 1 100); do
  if ! kill -0 "$pid" 2>/dev/null; then break; fi
  if node -e 'fetch(process.argv[1]).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))' \
    "http://127.0.0.1:$admin_port/readyz" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "portier did not become ready:" >&2
  cat "$work/portier.log" >&2
  exit 1
fi

export PORTIER_ADMIN="http://127.0.0.1:$admin_port/"
export PORTIER_PREFIXED="https://127.0.0.1:$https_port/portier/"
export PORTIER_MANIFESTS="$m"

if [ "${1:-}" = "serve" ]; then
  echo "dashboard: $PORTIER_ADMIN and $PORTIER_PREFIXED (Ctrl-C stops portier)"
  wait "$pid"
  exit 0
fi

cd "$here"
echo "== npm ci"
npm ci --no-audit --no-fund --loglevel=error
echo "== node --test"
status=0
node --test --test-reporter=spec dashboard.test.mjs || status=$?
if [ "${1:-}" = "screenshot" ]; then
  echo "== screenshot"
  node screenshot.mjs "$root/target/dashboard.png" || status=$?
fi
if [ "$status" != 0 ]; then
  echo "portier log:" >&2
  tail -n 50 "$work/portier.log" >&2
fi
exit "$status"
