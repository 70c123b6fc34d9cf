#!/usr/bin/env bash
# Build the pachy image, pachy:<version>, locally with no registry: mountd,
# the shim, pachctl and the worker agent in one image (the Kubernetes
# deployment's pachd and every worker pod's init container and sidecar).
#
#   installers/build-image.sh                    # docker if it answers, else podman
#   installers/build-image.sh --engine podman    # into podman's store (podman kube play)
#   installers/build-image.sh --tag pachy:dev    # another name
#   installers/build-image.sh --force            # rebuild even if the image is up to date
#   installers/build-image.sh --rebuild-base     # and the Debian base too
#
# Steps, each skipped when its result is already there:
#   1. the base image pachy-local/pachy-base:bookworm-<hash of its package list>:
#      `mmdebstrap --variant=minbase bookworm` (python3 3.11, fuse3, busybox-static,
#      ca-certificates) piped into `<engine> import`;
#   2. a wheelhouse of pachy and its dependencies (`pip wheel` on this machine,
#      from the package index pip is configured with), so the build needs no network;
#   3. `<engine> build` of installers/image/Dockerfile.
# The image carries the label pachy.source = a hash of the project's sources; an
# image of that tag with the same hash is up to date and nothing is done
# (--force rebuilds it; the dependencies' versions are not in the hash).
# Environment: PYTHON=/path/to/python3.11 (default: REPO/.venv/bin/python, else python3)
# makes the wheels; it must be a 3.11, the minor of bookworm's python3.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$REPO/installers"
SUITE=bookworm
PY_MINOR=3.11
# What the image runs on: python3 (mountd, the shim, pachctl), fuse3 (fusermount3 and
# libfuse3 for pyfuse3: FUSE mounts and lazy inputs), busybox-static (the agent runs it in
# images without libc), ca-certificates (S3 over TLS).
BASE_PACKAGES=(python3 fuse3 busybox-static ca-certificates)
# The project's files that go into the image (and into its source hash).
SOURCES=(pfsfuse mountd pachctl pps shim kube)

engine=""
tag=""
force=0
rebuild_base=0
usage() { sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --engine) engine="${2:-}"; shift 2 ;;
        --engine=*) engine="${1#*=}"; shift ;;
        --tag) tag="${2:-}"; shift 2 ;;
        --tag=*) tag="${1#*=}"; shift ;;
        --force) force=1; shift ;;
        --rebuild-base) force=1; rebuild_base=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "build-image.sh: error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

die() { echo "build-image.sh: error: $*" >&2; exit 1; }
say() { echo "==> $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
t0="$(now)"

# --- the engine ----------------------------------------------------------------
case "$engine" in
    "")
        if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
            engine=docker
        elif command -v podman >/dev/null 2>&1; then
            engine=podman
        else
            die "neither a Docker engine answers nor is podman installed: start dockerd, or apt-get install podman"
        fi
        ;;
    docker)
        command -v docker >/dev/null 2>&1 || die "docker is not installed: apt-get install docker.io (or use --engine podman)"
        docker info >/dev/null 2>&1 || die "no Docker engine answers; start one: dockerd & (or use --engine podman)"
        ;;
    podman)
        command -v podman >/dev/null 2>&1 || die "podman is not installed: apt-get install podman (or use --engine docker)"
        ;;
    *) die "--engine must be docker or podman, not '$engine'" ;;
esac
import_quiet=()
[ "$engine" = podman ] && import_quiet=(--quiet)  # docker import has no such flag, and says nothing
exists() { "$engine" image inspect "$1" >/dev/null 2>&1; }

# --- names and the source hash -------------------------------------------------
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    [ -x "$REPO/.venv/bin/python" ] && PYTHON="$REPO/.venv/bin/python"
fi
have_minor="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" ||
    die "cannot run $PYTHON; point PYTHON at a python$PY_MINOR"
[ "$have_minor" = "$PY_MINOR" ] ||
    die "$PYTHON is Python $have_minor, but the image's python3 ($SUITE) is $PY_MINOR: compiled wheels would not load.
  Point PYTHON at a python$PY_MINOR: PYTHON=/usr/bin/python$PY_MINOR $0"
version="$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$REPO/pyproject.toml")"
tag="${tag:-pachy:$version}"

# Every file that ends up in the image, by content (not mtime), so a fresh checkout of
# the same sources finds its image up to date.
source_files() {
    cd "$REPO"
    {
        find "${SOURCES[@]}" -type f \( -name '*.py' -o -name '*.md' -o -name '*.sh' -o -name '*.json' \) \
            -not -path '*/__pycache__/*'
        printf '%s\n' pyproject.toml README.md installers/build-image.sh installers/image/Dockerfile
    } | LC_ALL=C sort
}
source_hash="$(cd "$REPO" && source_files | xargs -d '\n' sha256sum | sha256sum | cut -c1-16)"
base_hash="$(printf '%s\n' "$SUITE" "${BASE_PACKAGES[@]}" minbase-v1 | sha256sum | cut -c1-12)"
base="pachy-local/pachy-base:$SUITE-$base_hash"

if [ "$force" -eq 0 ] && exists "$tag" &&
    [ "$("$engine" image inspect --format '{{ index .Config.Labels "pachy.source" }}' "$tag" 2>/dev/null)" = "$source_hash" ]; then
    say "$tag is up to date in $engine (sources $source_hash; --force rebuilds it)"
    echo "$tag"
    exit 0
fi

# --- 1. the base image ----------------------------------------------------------
if [ "$rebuild_base" -eq 1 ] || ! exists "$base"; then
    command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap is not installed: apt-get install mmdebstrap"
    say "$base: mmdebstrap --variant=minbase $SUITE | $engine import"
    t="$(now)"
    # No documentation, manual pages or translations in the image; no apt lists either.
    mmdebstrap --quiet --variant=minbase --include="$(IFS=,; echo "${BASE_PACKAGES[*]}")" \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        "$SUITE" - | "$engine" import "${import_quiet[@]}" - "$base" >/dev/null ||
        die "could not make the base image (is a Debian mirror reachable? see mmdebstrap's messages above)"
    echo "    $(since "$t")"
else
    say "$base: present (--rebuild-base makes it again)"
fi

# --- 2. the build context: sources, wheels, the agent ---------------------------
ctx="$(mktemp -d "${TMPDIR:-/tmp}/pachy-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/src" "$ctx/wheels"
# Build the wheel from a copy: setuptools writes build/ and *.egg-info next to its sources.
(cd "$REPO" && source_files | grep -v '^installers/' | xargs -d '\n' cp --parents -t "$ctx/src")
cp "$HERE/image/Dockerfile" "$REPO/shim/agent/agent.sh" "$ctx/"
say "wheelhouse: pip wheel pachy and its dependencies ($PYTHON)"
t="$(now)"
pip_quiet=(--quiet --disable-pip-version-check --no-input)
"$PYTHON" -m pip wheel "${pip_quiet[@]}" --wheel-dir "$ctx/wheels" "$ctx/src" 2> >(grep -v "is ignored: it is neither" >&2) ||
    die "pip wheel failed (is the package index pip uses reachable? pip config list)"
"$PYTHON" -m pip download "${pip_quiet[@]}" --no-deps --dest "$ctx/wheels" pip 2> >(grep -v "is ignored: it is neither" >&2) ||
    die "pip download pip failed (is the package index pip uses reachable?)"
rm -rf "$ctx/src"
echo "    $(ls "$ctx/wheels" | wc -l) wheels, $(du -sh "$ctx/wheels" | cut -f1), $(since "$t")"

# --- 3. the image -----------------------------------------------------------------
say "$engine build -t $tag"
t="$(now)"
build_log="$ctx/build.log"
if ! "$engine" build --build-arg "BASE=$base" --label "pachy.source=$source_hash" \
    --label "pachy.version=$version" -t "$tag" "$ctx" >"$build_log" 2>&1; then
    tail -n 30 "$build_log" >&2
    die "$engine build failed (its output ends above)"
fi
echo "    $(since "$t")"
size="$("$engine" image inspect --format '{{.Size}}' "$tag")"
say "built $tag in $engine: $((size / 1000000)) MB, $(since "$t0") in all"
echo "$tag"
