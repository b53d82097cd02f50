#!/usr/bin/env bash
# Starts (or stops) etcd and kube-apiserver on 127.0.0.1 for one test, like
# controller-runtime's envtest: a real API server with no controller-manager,
# scheduler or kubelet.
#
#   tests/k8s/apiserver.sh up   RUN_DIR PORT   -> prints the kubeconfig path
#   tests/k8s/apiserver.sh down RUN_DIR
#
# etcd listens on PORT+1 (clients) and PORT+2 (peers). The server trusts a CA
# made here; the kubeconfig authenticates as a cluster admin (group
# system:masters) with a client certificate. Binaries come from
# build-kube-apiserver.sh ($SLUICE_KUBE_DIR, default ~/.cache/sluice-kube).
set -euo pipefail
action=${1:?usage: apiserver.sh up|down RUN_DIR [PORT]}
RUN=${2:?usage: apiserver.sh up|down RUN_DIR [PORT]}
PORT=${3:-16443}
KUBE_DIR=${SLUICE_KUBE_DIR:-$HOME/.cache/sluice-kube}
mkdir -p "$RUN"
RUN=$(cd "$RUN" && pwd)

stop_all() {
  local pidfile pid
  for pidfile in "$RUN/apiserver.pid" "$RUN/etcd.pid"; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

case "$action" in
  down) stop_all; exit 0 ;;
  up) ;;
  *) echo "usage: apiserver.sh up|down RUN_DIR [PORT]" >&2; exit 2 ;;
esac
for bin in kube-apiserver etcd; do
  [ -x "$KUBE_DIR/bin/$bin" ] || { echo "$KUBE_DIR/bin/$bin missing: run tests/k8s/build-kube-apiserver.sh" >&2; exit 1; }
done
stop_all

PKI=$RUN/pki
mkdir -p "$PKI"
if [ ! -f "$PKI/admin.crt" ]; then
  ssl() { openssl "$@" 2>/dev/null; }
  ssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=sluice-test-ca -keyout "$PKI/ca.key" -out "$PKI/ca.crt"
  ssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout "$PKI/server.key" -out "$PKI/server.csr"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n' > "$PKI/server.ext"
  ssl x509 -req -in "$PKI/server.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 -extfile "$PKI/server.ext" -out "$PKI/server.crt"
  ssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=admin" -keyout "$PKI/admin.key" -out "$PKI/admin.csr"
  # X.509 v3 with extensions: rustls (kube-rs) refuses v1 certificates.
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > "$PKI/admin.ext"
  ssl x509 -req -in "$PKI/admin.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 -extfile "$PKI/admin.ext" -out "$PKI/admin.crt"
  ssl genrsa -out "$PKI/sa.key" 2048
  ssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
fi

ETCD_CLIENT=$((PORT + 1))
ETCD_PEER=$((PORT + 2))
rm -rf "$RUN/etcd"
setsid "$KUBE_DIR/bin/etcd" --name sluice-test --data-dir "$RUN/etcd" --unsafe-no-fsync \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "sluice-test=http://127.0.0.1:$ETCD_PEER" > "$RUN/etcd.log" 2>&1 &
echo $! > "$RUN/etcd.pid"
for _ in $(seq 1 200); do
  curl -sf "http://127.0.0.1:$ETCD_CLIENT/health" > /dev/null && break
  sleep 0.05
done

setsid "$KUBE_DIR/bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_CLIENT" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$PORT" \
  --tls-cert-file="$PKI/server.crt" --tls-private-key-file="$PKI/server.key" --client-ca-file="$PKI/ca.crt" \
  --authorization-mode=RBAC --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range=10.0.0.0/24 --cert-dir="$RUN/certs" \
  --disable-admission-plugins=ServiceAccount --endpoint-reconciler-type=none --v=1 \
  > "$RUN/apiserver.log" 2>&1 &
echo $! > "$RUN/apiserver.pid"

KUBECONFIG_FILE=$RUN/kubeconfig
kc() { kubectl config --kubeconfig="$KUBECONFIG_FILE" "$@" > /dev/null; }
kc set-cluster test --server="https://127.0.0.1:$PORT" --certificate-authority="$PKI/ca.crt" --embed-certs=true
kc set-credentials admin --client-certificate="$PKI/admin.crt" --client-key="$PKI/admin.key" --embed-certs=true
kc set-context test --cluster=test --user=admin --namespace=default
kc use-context test
for _ in $(seq 1 900); do
  if curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "https://127.0.0.1:$PORT/readyz" > /dev/null 2>&1; then
    echo "$KUBECONFIG_FILE"
    exit 0
  fi
  sleep 0.1
done
echo "kube-apiserver did not become ready in 90 s; see $RUN/apiserver.log" >&2
tail -20 "$RUN/apiserver.log" >&2 || true
stop_all
exit 1
