# pachy's agent in a worker container (pps/WORKERS.md, "Docker"). Run by the
# host's static busybox, bind-mounted read-only with this file at /.pachy/bin:
#     /.pachy/bin/busybox env -i /.pachy/bin/busybox sh /.pachy/bin/agent.sh /.pachy/ctl
# (an empty environment: units get exactly theirs) so the user's image needs nothing of pachy, not even a shell. busybox runs
# its own applets (ln, kill, cat, ...) without looking for them in the image.
#
# The shim on the host talks to it through two FIFOs in the control
# directory: it writes verbs into `cmd`, the agent answers in `events`.
#     run ID          run ID/run.sh (the shim wrote it) in a session of its own
#                     (so its pid is its process group), stdin from ID/stdin,
#                     stdout and stderr into the FIFOs ID/out and ID/err;
#                     answers "started ID PID", then "done ID STATUS" when it
#                     ended and what it left behind was killed
#     kill SIG PGID   signal a unit's process group (a timeout, a stop)
# Both FIFOs are opened read-write: the agent never sees an EOF when the shim
# is between units, and its writes never block for want of a reader.
ctl=${1:-/.pachy/ctl}
bb=/.pachy/bin/busybox
exec 3<>"$ctl/cmd" 4<>"$ctl/events" </dev/null
# The image's users, for the shim to resolve transform.user by name (empty files if
# the image has none: the shim waits for them to be there).
cat /etc/group >"$ctl/group.tmp" 2>/dev/null; mv -f "$ctl/group.tmp" "$ctl/group"
cat /etc/passwd >"$ctl/passwd.tmp" 2>/dev/null; mv -f "$ctl/passwd.tmp" "$ctl/passwd"
# /pfs is a symlink to one the shim points at each unit's directory in turn.
[ -d /pfs ] && [ ! -L /pfs ] && rmdir /pfs 2>/dev/null
[ -L /pfs ] || ln -sfn "$ctl/links/pfs" /pfs
echo "ready - $$" >&4
while read -r verb a b <&3; do
    case $verb in
    run)
        # The previous unit's waiter has said "done" (the shim runs one unit at a time):
        # waiting for it frees its entry in the shell's job table, which else grows by
        # ~70 bytes a unit for the life of the container.
        [ -n "$waiter" ] && wait "$waiter"
        (
            d=$ctl/$a
            $bb setsid $bb sh "$d/run.sh" <"$d/stdin" >"$d/out" 2>"$d/err" 3<&- 4<&- &
            pid=$!
            echo "started $a $pid" >&4
            wait $pid
            rc=$?
            # What the unit left running dies with it: its group, then whatever
            # else runs in the container besides this agent (pid 1) and us.
            kill -9 -$pid 2>/dev/null
            kill -9 -1 2>/dev/null
            echo "done $a $rc" >&4
        ) &
        waiter=$!
        ;;
    kill)
        kill -"$a" -"$b" 2>/dev/null
        ;;
    exit)
        exit 0
        ;;
    esac
done
