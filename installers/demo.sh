#!/usr/bin/env bash
# Install pachy, then run the fruit stand from the seed (1.x docs ch. 3) against
# a fresh, throw-away store: two commits of sales data, the filter and sum
# pipelines from examples/fruit_stand/pipeline.json running on each, and the
# totals per fruit they compute, checked against awk over the raw files; then
# the same repos through `pachctl mount` (where FUSE is available).
#
#   installers/demo.sh               # store in REPO/.demo/run.XXXXXX (kept; printed)
#   installers/demo.sh --home DIR    # use DIR as PACHY_HOME instead (must be empty or new)
#
# Your own PACHY_HOME, ADDRESS and config file are not used: the demo runs its
# own daemon, started on demand by the first pachctl command and stopped at
# the end.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

home=""
while [ $# -gt 0 ]; do
    case "$1" in
        --home)
            [ $# -ge 2 ] || { echo "demo.sh: --home needs a directory" >&2; exit 2; }
            home="$2"
            shift 2
            ;;
        -h | --help)
            sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "demo.sh: unknown argument '$1' (use --home DIR)" >&2
            exit 2
            ;;
    esac
done

bash "$REPO/installers/install.sh"

PACHCTL="$REPO/.venv/bin/pachctl"
PYTHON="$REPO/.venv/bin/python"

# --- a fresh store, isolated from the user's own settings ---------------------

if [ -z "$home" ]; then
    mkdir -p "$REPO/.demo"
    [ -f "$REPO/.demo/.gitignore" ] || echo '*' >"$REPO/.demo/.gitignore"
    home="$(mktemp -d "$REPO/.demo/run.XXXXXX")"
    # A unix socket path must fit in 108 bytes; deep checkouts fall back to /tmp.
    if [ "${#home}" -gt 90 ]; then
        rmdir "$home"
        home="$(mktemp -d "${TMPDIR:-/tmp}/pachy-demo.XXXXXX")"
    fi
else
    mkdir -p "$home"
    home="$(cd "$home" && pwd)"
    if [ -n "$(ls -A "$home")" ]; then
        echo "demo.sh: $home is not empty; the demo needs a fresh store" >&2
        exit 2
    fi
fi
export PACHY_HOME="$home"
export XDG_CONFIG_HOME="$home/config" # no config file: the embedded default
unset PACHY_ADDRESS ADDRESS PACHD_ADDRESS PACHY_TOKEN PACHY_STORE
WORK="$home/input"
mkdir -p "$WORK"

stop_daemon() {
    # A mount left by a failed step goes first (and is harmless to repeat).
    if [ -n "${MNT:-}" ] && grep -qs " $MNT fuse" /proc/self/mounts; then
        "$PACHCTL" unmount "$MNT" >/dev/null 2>&1 || fusermount3 -uz "$MNT" 2>/dev/null || true
    fi
    # The daemon writes its pid into the lock file it holds while it runs.
    local lock="$PACHY_HOME/mountd.lock" pid _
    [ -f "$lock" ] || return 0
    pid="$(tr -dc '0-9' <"$lock")"
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        return 0
    fi
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q mountd || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "demo.sh: the daemon (pid $pid) did not stop; killing it" >&2
    kill -9 "$pid" 2>/dev/null || true
}
trap stop_daemon EXIT

echo "==> demo store (PACHY_HOME): $PACHY_HOME"

# --- sample data: deterministic, a few hundred sales per set ------------------

"$PYTHON" - "$WORK" <<'PY'
import random
import sys

work = sys.argv[1]
fruits = ["apple", "orange", "banana"]
for name, seed, lines in (("set1.txt", 1, 300), ("set2.txt", 2, 400)):
    rng = random.Random(seed)
    with open(f"{work}/{name}", "w") as f:
        for _ in range(lines):
            f.write(f"{rng.choice(fruits)}\t{rng.randint(1, 20)}\n")
PY
echo "==> sample sales data: $WORK/set1.txt ($(wc -l <"$WORK/set1.txt") lines)," \
    "$WORK/set2.txt ($(wc -l <"$WORK/set2.txt") lines)"
cd "$WORK"

# --- the seed's walk-through ----------------------------------------------------

pachctl() { "$PACHCTL" "$@"; }

step() {
    # step CMD...: show the command, run it; a failure ends the demo.
    echo
    echo "$ pachctl $*"
    pachctl "$@"
}

step create-repo data
step list-repo
step put-file data master sales -c -f set1.txt
step list-commit data

echo
echo "$ pachctl get-file data master sales | head -4"
pachctl get-file data master sales | head -4

# --- the pipelines: filter (map) and sum (FILE + DIFF, with /pfs/prev) -----------

step create-pipeline -f "$REPO/examples/fruit_stand/pipeline.json"
step flush-commit data/master
step list-job
step list-pipeline

sums() {
    # sums: the totals the "sum" pipeline computed, one "fruit count" line each
    for fruit in apple banana orange; do
        printf '%-8s %6s\n' "$fruit" "$(pachctl get-file sum master "$fruit" | tr -d '[:space:]')"
    done
}
totals() { awk -F'\t' '{ sum[$1] += $2 } END { for (f in sum) printf "%-8s %6d\n", f, sum[f] }' | sort; }

echo
echo "==> fruit sold after set1 (from the sum pipeline: pachctl get-file sum master <fruit>):"
after1="$(sums)"
echo "$after1"

step put-file data master sales -c -f set2.txt
step flush-commit data/master
step list-job
step list-commit sum
step inspect-commit sum master

echo
echo "==> fruit sold after set1 + set2 (the sum pipeline only saw set2's lines, and added /pfs/prev):"
after2="$(sums)"
echo "$after2"

echo
echo "$ pachctl get-file data master/1 sales | wc -l"
lines1="$(pachctl get-file data master/1 sales | wc -l)"
echo "$lines1"
step fsck

# --- the mount: the same data as directories, read with ordinary tools ----------

mounted=""
if [ -e /dev/fuse ] && command -v fusermount3 >/dev/null; then
    MNT="$home/pfs"
    mkdir -p "$MNT"
    step mount "$MNT"
    echo
    echo "$ ls $MNT; ls $MNT/sum; ls -l $MNT/sum/master"
    ls "$MNT"
    ls "$MNT/sum"
    ls -l "$MNT/sum/master"
    echo
    echo "$ wc -l $MNT/data/master/sales $MNT/data/master/0/sales"
    wc -l "$MNT/data/master/sales" "$MNT/data/master/0/sales"
    mounted="$(for fruit in apple banana orange; do printf '%-8s %6s\n' "$fruit" "$(tr -d '[:space:]' <"$MNT/sum/master/$fruit")"; done)"
    mounted_lines="$(wc -l <"$MNT/data/master/sales")"
    step unmount "$MNT"
else
    echo
    echo "==> no FUSE here (/dev/fuse or fusermount3 missing): skipping pachctl mount"
fi

# --- checks: the pipelines' totals are the totals of the raw files ----------------

expected1="$(totals <"$WORK/set1.txt")"
expected2="$(cat "$WORK/set1.txt" "$WORK/set2.txt" | totals)"
n1="$(wc -l <"$WORK/set1.txt")"
n2="$(wc -l <"$WORK/set2.txt")"
failed=0
check() {
    # check WHAT OK: print the outcome, remember a failure.
    if [ "$2" = 1 ]; then
        echo "    ok: $1"
    else
        echo "    FAILED: $1" >&2
        failed=1
    fi
}
echo "==> checks"
check "master/1 holds set1 + set2 ($((n1 + n2)) lines; got $lines1)" "$([ "$lines1" -eq $((n1 + n2)) ] && echo 1)"
check "sum after set1 = awk over set1.txt" "$([ "$after1" = "$expected1" ] && echo 1)"
check "sum after set2 = awk over set1.txt + set2.txt" "$([ "$after2" = "$expected2" ] && echo 1)"
if [ -n "$mounted" ]; then
    check "the mount shows the same totals and $((n1 + n2)) sales lines" \
        "$([ "$mounted" = "$expected2" ] && [ "$mounted_lines" -eq $((n1 + n2)) ] && echo 1)"
fi

echo
echo "==> stopping the daemon"
stop_daemon
if [ "$failed" -ne 0 ]; then
    echo "demo.sh: FAILED (the store is kept in $PACHY_HOME for a look)" >&2
    exit 1
fi
echo "==> demo done; the store is in $PACHY_HOME (rm -rf it, or $REPO/.demo, when done)"
