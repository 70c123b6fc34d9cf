#!/usr/bin/env bash
# Install pachy into REPO/.venv: system packages (apt), then the Python package.
#
#   installers/install.sh          # pachy itself (pip install -e REPO)
#   installers/install.sh --test   # plus the test tools (pip install -e "REPO[test]")
#   installers/install.sh --force  # reinstall the Python package even if up to date
#
# Idempotent: system packages already present are not touched (no apt-get
# update either), an existing .venv is reused, and pip is skipped when
# pyproject.toml has not changed since the last install of the same kind.
# Environment: PYTHON=/path/to/python3.x picks the interpreter (>= 3.11).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
MIN_PY="3.11"
SYSTEM_PACKAGES=(python3 python3-venv python3-dev gcc pkg-config fuse3 libfuse3-dev git)
# The Docker runner's engine and the static busybox its agent runs in every container
# (pps/runners/docker.py); the tests need both (tests/conftest.py starts dockerd if needed).
DOCKER_PACKAGES=(busybox-static)
# The stats example's image is built from a Debian rootfs (examples/stats/build.sh, tested).
# `pachctl completion zsh|fish` scripts are checked by the shells themselves (tests/test_completion.py).
TEST_PACKAGES=(mmdebstrap cgroupfs-mount iproute2 zsh fish)
# The Kubernetes tests run the generated manifests for real under podman's Kubernetes YAML
# engine (tests/test_kube_podman.py: `podman kube play`), with runc as its runtime (crun is
# not needed) and catatonit as the pods' init; the pachy image is built by
# installers/build-image.sh (mmdebstrap, above). uidmap and slirp4netns are what podman
# needs besides on a fresh bookworm; netavark/aardvark-dns give pods their bridge network,
# iptables its port forwarding (hostPort).
KUBE_TEST_PACKAGES=(podman runc catatonit conmon containernetworking-plugins netavark
                    aardvark-dns iptables uidmap slirp4netns fuse-overlayfs)
# An engine already installed (docker-ce from Docker's repository, say) is used as it is:
# docker.io would conflict with it.
command -v dockerd >/dev/null 2>&1 || DOCKER_PACKAGES+=(docker.io)

extras=""
force=0
for arg in "$@"; do
    case "$arg" in
        --test)
            extras="test"
            SYSTEM_PACKAGES+=("${DOCKER_PACKAGES[@]}" "${TEST_PACKAGES[@]}" "${KUBE_TEST_PACKAGES[@]}")
            ;;
        --force) force=1 ;;
        -h | --help)
            sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "install.sh: unknown argument '$arg' (use --test, --force)" >&2
            exit 2
            ;;
    esac
done

say() { echo "==> $*"; }
die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

LOG="$(mktemp "${TMPDIR:-/tmp}/pachy-install.XXXXXX")"
trap 'rm -f "$LOG"' EXIT

# Run a noisy command with its output in $LOG; show the end of it on failure.
quietly() {
    if ! "$@" >"$LOG" 2>&1; then
        echo "install.sh: failed: $*" >&2
        tail -n 30 "$LOG" >&2
        exit 1
    fi
}

# --- system packages ---------------------------------------------------------

missing_packages() {
    local pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            echo "$pkg"
        fi
    done
}

apt_install() {
    # apt_install PKG...: install PKGs that are missing (apt-get update first).
    local missing sudo=()
    mapfile -t missing < <(missing_packages "$@")
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            die "these system packages are missing and you are not root (no sudo either):
    ${missing[*]}
  Ask an administrator to run:
    apt-get update && apt-get install -y ${missing[*]}
  then run this script again."
        fi
    fi
    say "installing system packages: ${missing[*]}"
    quietly "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    quietly "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
}

say "checking system packages"
if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
    apt_install "${SYSTEM_PACKAGES[@]}"
else
    echo "    not a Debian/Ubuntu system: make sure these (or your system's equivalents) are installed:" >&2
    echo "    ${SYSTEM_PACKAGES[*]}" >&2
fi

# --- podman's configuration for the Kubernetes tests -------------------------

# podman kube play here needs runc as its runtime, and default ulimits below this
# machine's hard limits (podman's default nofile/nproc exceed a container host's, and
# every container then fails with a setrlimit error). A file the user already has is
# merged into, never replaced: only the settings missing from it are added, and a
# setting they gave another value is left alone, with a note.
CONTAINERS_CONF="${CONTAINERS_CONF:-/etc/containers/containers.conf}"
conf_runtime='runtime = "runc"'
conf_ulimits='default_ulimits = ["nofile=16384:16384", "nproc=32768:32768"]'

conf_has() { [ -f "$CONTAINERS_CONF" ] && grep -Eq "^[[:space:]]*$1[[:space:]]*=" "$CONTAINERS_CONF"; }
conf_section_has() { [ -f "$CONTAINERS_CONF" ] && grep -Eq "^[[:space:]]*\\[$1\\][[:space:]]*$" "$CONTAINERS_CONF"; }

conf_add() {
    # conf_add SECTION LINE: put LINE under [SECTION] (made at the end if missing).
    local tmp
    tmp="$(mktemp)"
    if conf_section_has "$1"; then
        awk -v sec="[$1]" -v line="$2" '
            { print }
            !done && $0 ~ /^[[:space:]]*\[/ { gsub(/[[:space:]]/, "", $0); if ($0 == sec) { print line; done = 1 } }
        ' "$CONTAINERS_CONF" >"$tmp"
    else
        { [ -f "$CONTAINERS_CONF" ] && cat "$CONTAINERS_CONF"; printf '\n[%s]\n%s\n' "$1" "$2"; } >"$tmp"
    fi
    cat "$tmp" >"$CONTAINERS_CONF"
    rm -f "$tmp"
}

podman_conf() {
    local key section line wanted
    for wanted in "engine|runtime|$conf_runtime" "containers|default_ulimits|$conf_ulimits"; do
        IFS='|' read -r section key line <<<"$wanted"
        if conf_has "$key"; then
            grep -Fq "$line" "$CONTAINERS_CONF" ||
                echo "    note: $CONTAINERS_CONF sets $key already; left as it is (the Kubernetes tests want: $line under [$section])" >&2
            continue
        fi
        if [ "$(id -u)" -ne 0 ]; then
            echo "    note: not root: add to $CONTAINERS_CONF under [$section]: $line" >&2
            continue
        fi
        mkdir -p "$(dirname "$CONTAINERS_CONF")"
        say "$CONTAINERS_CONF: adding $line under [$section]"
        conf_add "$section" "$line"
    done
}

if [ "$extras" = "test" ]; then
    podman_conf
fi

# --- a Python >= 3.11 and the virtual environment ---------------------------

py_ok() {
    # py_ok PYTHON: true if it runs and is >= MIN_PY
    "$1" -c "import sys; sys.exit(0 if sys.version_info >= (${MIN_PY/./, }) else 1)" >/dev/null 2>&1
}

find_python() {
    local cand
    for cand in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [ -n "$cand" ] || continue
        command -v "$cand" >/dev/null 2>&1 || continue
        if py_ok "$cand"; then
            command -v "$cand"
            return 0
        fi
    done
    return 1
}

venv_ok() {
    [ -x "$VENV/bin/python" ] && py_ok "$VENV/bin/python" &&
        "$VENV/bin/python" -m pip --version >/dev/null 2>&1
}

if venv_ok; then
    say "reusing virtual environment $VENV ($("$VENV/bin/python" -V 2>&1))"
else
    say "checking for Python >= $MIN_PY"
    if ! PY="$(find_python)"; then
        # Older distributions (Ubuntu 22.04) ship 3.10 as python3 but have python3.11.
        if command -v apt-cache >/dev/null 2>&1 && apt-cache show python3.11-venv >/dev/null 2>&1; then
            apt_install python3.11 python3.11-venv python3.11-dev
        fi
        PY="$(find_python)" || die "pachy needs Python >= $MIN_PY, but 'python3' is $(python3 -V 2>&1 || echo missing).
  Install Python $MIN_PY or newer (with its venv module) and run again,
  or point PYTHON at it: PYTHON=/path/to/python3.12 $0 $*"
    fi
    PY="$("$PY" -c 'import sys; print(sys.executable)')"
    echo "    using $PY ($("$PY" -V 2>&1))"
    if [ -e "$VENV" ]; then
        say "recreating virtual environment $VENV (the old one is broken or too old)"
        rm -rf "$VENV"
    else
        say "creating virtual environment $VENV"
    fi
    "$PY" -m venv "$VENV" >"$LOG" 2>&1 || {
        cat "$LOG" >&2
        die "could not create a virtual environment with $PY (on Debian/Ubuntu: apt-get install python3-venv)"
    }
fi

# --- the Python package ------------------------------------------------------

STAMP="$VENV/.pachy-install"
want="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)"
have_hash=""
have_extras=""
if [ -f "$STAMP" ]; then
    read -r have_hash have_extras <"$STAMP" || true
fi
up_to_date=0
if [ "$force" -eq 0 ] && [ "$have_hash" = "$want" ] && [ -x "$VENV/bin/pachctl" ] &&
    head -n 1 "$VENV/bin/pachctl" | grep -qF "$VENV/bin/python" &&
    { [ -z "$extras" ] || [ "$have_extras" = "$extras" ]; }; then
    up_to_date=1
fi

if [ "$up_to_date" -eq 1 ]; then
    say "pachy is up to date in $VENV (--force to reinstall)"
else
    target="$REPO"
    [ -n "$extras" ] && target="${REPO}[${extras}]"
    say "installing pachy${extras:+ with [$extras]} (pip install -e $target)"
    rm -f "$STAMP"
    quietly "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-input -e "$target"
    # A test install also satisfies a plain one; remember the larger.
    if [ -z "$extras" ] && [ "$have_hash" = "$want" ]; then
        extras="$have_extras"
    fi
    echo "$want $extras" >"$STAMP"
fi

say "done: $VENV/bin/pachctl"
