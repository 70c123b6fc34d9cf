#!/usr/bin/env bash
# Build the stats example's image, pachy-example/stats, with no registry:
#   1. a Debian base image, pachy-local/debian:bookworm, from `mmdebstrap
#      --variant=minbase` piped into `docker import` (skipped if present);
#   2. the Go sources of a few projects from Debian's golang-*-dev packages
#      (`apt-get download`, `dpkg-deb -x`), into the build context;
#   3. `docker build` of the Dockerfile next to this script.
#
#   examples/stats/build.sh            # needs docker, mmdebstrap, apt-get download
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BASE="pachy-local/debian:bookworm"
IMAGE="pachy-example/stats"
PACKAGES=(golang-github-docker-docker-dev golang-github-influxdb-influxdb-dev
          golang-github-spf13-cobra-dev golang-github-prometheus-common-dev)

die() { echo "build.sh: error: $*" >&2; exit 1; }
command -v docker >/dev/null || die "docker is not installed: apt-get install docker.io"
docker info >/dev/null 2>&1 || die "no Docker engine answers; start one: dockerd & (or: systemctl start docker)"

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed: apt-get install mmdebstrap"
    echo "==> $BASE: mmdebstrap --variant=minbase bookworm | docker import"
    mmdebstrap --quiet --variant=minbase bookworm - | docker import - "$BASE" >/dev/null
fi

ctx="$(mktemp -d "${TMPDIR:-/tmp}/pachy-stats.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
cp "$HERE/Dockerfile" "$HERE/stats.sh" "$ctx/"
mkdir -p "$ctx/debs" "$ctx/root" "$ctx/gocode"
echo "==> Go sources: apt-get download ${PACKAGES[*]}"
(cd "$ctx/debs" && apt-get download -qq "${PACKAGES[@]}" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
for deb in "$ctx"/debs/*.deb; do
    [ -e "$deb" ] || die "apt-get download fetched nothing (is a Debian mirror reachable? apt-get update)"
    dpkg-deb -x "$deb" "$ctx/root"
done
cp -a "$ctx/root/usr/share/gocode/src/." "$ctx/gocode/"
rm -rf "$ctx/debs" "$ctx/root"

echo "==> docker build -t $IMAGE"
docker build -q -t "$IMAGE" "$ctx" >/dev/null 2> >(grep -v -i -E "deprecated|buildx|docs.docker.com/go/buildx|^ *$" >&2)
echo "$IMAGE"
