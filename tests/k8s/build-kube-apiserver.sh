#!/usr/bin/env bash
# Builds the Kubernetes API server the operator suite runs against: Kubernetes
# v1.20.2 from Debian bookworm's `kubernetes` source package (which carries the
# upstream tree with vendor/), compiled with Debian's Go 1.19, plus Debian's
# etcd 3.4. Nothing on the system is changed: apt runs with a private
# configuration and every package is unpacked under the cache folder.
#
#   tests/k8s/build-kube-apiserver.sh [DIR]     (default: $SLUICE_KUBE_DIR or ~/.cache/sluice-kube)
#
# Leaves DIR/bin/kube-apiserver and DIR/bin/etcd (about 130 MB) and removes
# the build inputs (about 2.5 GB while building). Does nothing when both
# binaries exist. Takes 7-15 minutes on 2 cores.
set -euo pipefail
DIR=${1:-${SLUICE_KUBE_DIR:-$HOME/.cache/sluice-kube}}
mkdir -p "$DIR/bin"
if [ -x "$DIR/bin/kube-apiserver" ] && [ -x "$DIR/bin/etcd" ]; then
  echo "kube-apiserver and etcd already built in $DIR/bin"
  exit 0
fi
KUBE_DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
B=$DIR/build
rm -rf "$B"
mkdir -p "$B/apt/lists/partial" "$B/apt/cache/archives/partial" "$B/apt/sources.d" "$B/debs" "$B/root" "$B/src" "$B/gopath/src/k8s.io" "$B/bin"

# The machine's own Debian mirrors, binary and source, in a private apt
# setup (its own package lists, so a fresh machine whose lists were never
# downloaded works too).
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  sed 's/^Types: deb$/Types: deb deb-src/' "$f" > "$B/apt/sources.d/$(basename "$f")"
done
: > "$B/apt/sources.list"
if [ -f /etc/apt/sources.list ]; then
  grep '^deb ' /etc/apt/sources.list >> "$B/apt/sources.list" || true
  sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >> "$B/apt/sources.list"
fi
apt_private() {
  apt-get -o "Dir::Etc::SourceList=$B/apt/sources.list" -o "Dir::Etc::SourceParts=$B/apt/sources.d" \
          -o "Dir::State::Lists=$B/apt/lists" -o "Dir::Cache=$B/apt/cache" "$@"
}
apt_private update -qq
cd "$B/debs"
apt_private source --download-only "kubernetes=$KUBE_DEB_VERSION"
apt_private download golang-1.19-go golang-1.19-src etcd-server rsync libpopt0 golang-github-modern-go-reflect2-dev
for deb in ./*.deb; do dpkg -x "$deb" "$B/root"; done
cp "$B/root/usr/bin/etcd" "$DIR/bin/etcd"
tar xzf kubernetes_*.orig.tar.gz -C "$B/src" --strip-components=1

# reflect2 v1.0.1 (vendored) crashes at run time on Go >= 1.18; Debian's
# v1.0.2 does not.
cd "$B/src"
VENDORED=vendor/github.com/modern-go/reflect2
DEBIAN_REFLECT2=$B/root/usr/share/gocode/src/github.com/modern-go/reflect2
find "$VENDORED" -name '*.go' -delete
cp "$DEBIAN_REFLECT2"/*.go "$DEBIAN_REFLECT2"/*.s "$VENDORED"/
sed -i 's#modern-go/reflect2 v1.0.1#modern-go/reflect2 v1.0.2#g' go.mod vendor/modules.txt

# Kubernetes 1.20 builds in GOPATH mode; its Makefile calls rsync, which is
# unpacked (not installed), so a wrapper points it at its library.
printf '#!/bin/sh\nLD_LIBRARY_PATH=%s/root/usr/lib/x86_64-linux-gnu exec %s/root/usr/bin/rsync "$@"\n' "$B" "$B" > "$B/bin/rsync"
chmod +x "$B/bin/rsync"
export GOROOT=$B/root/usr/lib/go-1.19 GOPATH=$B/gopath GOCACHE=$B/gocache
export GO111MODULE=off CGO_ENABLED=0 GOFLAGS= GOPROXY=off
export PATH=$B/bin:$GOROOT/bin:$PATH
ln -sfn "$B/src" "$B/gopath/src/k8s.io/kubernetes"
COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56
export KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=clean KUBE_GIT_COMMIT=$COMMIT KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20
# The generated OpenAPI definitions are not in the source tarball.
make gen_openapi
cd "$B/gopath/src/k8s.io/kubernetes"
FLAGS="-s -w"
for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  FLAGS="$FLAGS -X $pkg.gitVersion=v1.20.2 -X $pkg.gitMajor=1 -X $pkg.gitMinor=20 -X $pkg.gitCommit=$COMMIT -X $pkg.gitTreeState=clean"
done
go build -ldflags "$FLAGS" -o "$DIR/bin/kube-apiserver" ./cmd/kube-apiserver
rm -rf "$B"
"$DIR/bin/kube-apiserver" --version
