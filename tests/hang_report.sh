#!/usr/bin/env bash
# Called by tests/run.sh when a test runs past its time: says where everything is stuck,
# then aborts the test's FUSE connections. A process waiting on a FUSE request that the
# mount daemon already took cannot be killed, not even by SIGKILL, so without the abort
# one stuck request would hold `make test` until CI's own limit.
# Usage: tests/hang_report.sh PGID   (the stuck test's process group)
set -u
pgid=$1
echo "=== processes of the test (pgid $pgid) and Aquifer daemons"
ps -eo pid,pgid,stat,wchan:32,args | awk -v g="$pgid" 'NR == 1 || $2 == g || /aq[d ]|aq mount/' | grep -v awk
echo "=== kernel stacks of processes in D state"
for t in /proc/[0-9]*/task/[0-9]*; do
  [[ $(awk '{print $3}' "$t/stat" 2>/dev/null) == D ]] || continue
  echo "--- ${t#/proc/} $(tr '\0' ' ' <"${t%/task/*}/cmdline" 2>/dev/null | cut -c1-100)"
  cat "$t/stack" 2>/dev/null
done
if command -v gdb >/dev/null; then
  # the mount first; of each process, the threads that are in Aquifer's code
  for p in $(pgrep -f '^aq mount|/aq mount'; pgrep -x aqd); do
    echo "=== threads of $p: $(tr '\0' ' ' </proc/$p/cmdline | cut -c1-100)"
    timeout 60 gdb -p "$p" -batch -nx -ex 'thread apply all bt 16' 2>/dev/null | grep -E '^(Thread|#)' |
      awk '/^Thread/ { if (keep) printf "%s", blk; blk = ""; keep = 0 } / at src\// { keep = 1 }
           { blk = blk substr($0, 1, 200) "\n" } END { if (keep) printf "%s", blk }'
  done
fi
ctl=/sys/fs/fuse/connections mounted_ctl=
mountpoint -q $ctl || { mount -t fusectl none $ctl 2>/dev/null && mounted_ctl=1; }
# /proc/self/mountinfo: field 3 is the FUSE connection's device (0:N), field 5 the mount point
awk '$5 ~ "^/tmp/aqtest\\." && $0 ~ / - fuse\.aquifer / {split($3, d, ":"); print d[2], $5}' /proc/self/mountinfo |
while read -r conn m; do
  echo "=== aborting FUSE connection $conn ($m)"
  echo 1 >"$ctl/$conn/abort"
done
# the test is killed next and cannot stop its cluster: stop it here
for p in $(pgrep -f '/tmp/aqtest\.'); do
  [[ $(tr '\0' ' ' </proc/$p/cmdline 2>/dev/null) == *aq* ]] && kill -9 "$p" 2>/dev/null
done
awk '$2 ~ "^/tmp/aqtest\\." && $3 == "fuse.aquifer" {print $2}' /proc/mounts | xargs -r -n1 umount -l
[[ -n $mounted_ctl ]] && umount $ctl
