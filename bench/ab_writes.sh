#!/bin/bash
# ab_writes.sh ROUNDS TREE... - big sequential writes with each built tree in turn, ROUNDS
# times, each on a fresh `aq up` in /tmp/abw: fio's 1 MiB writes of 2 GiB through the
# mount (ending in fsync), then `aq bench gen` of 8 shards of 256 MiB natively; prints the
# rates and aqd's CPU time for each (docs/performance.md, "Big writes"). A tree is a
# checkout with bin/ built, e.g. `git worktree add /tmp/base REV`.
set -u
rounds=$1
shift
cpu_ms() { awk '{print ($14 + $15) * 10}' "/proc/$1/stat"; }
for _ in $(seq "$rounds"); do
	for tree in "$@"; do
		d=/tmp/abw
		mkdir -p $d
		"$tree/bin/aq" up --data $d/var --mount $d/mnt >/dev/null 2>&1 || { echo "$tree: aq up failed" >&2; exit 1; }
		aqd=$(cat $d/var/aqd.pid)
		c0=$(cpu_ms "$aqd")
		fio_mb=$(fio --name=sw --directory=$d/mnt --ioengine=psync --rw=write --bs=1m --size=2g --end_fsync=1 \
			--output-format=json 2>/dev/null |
			python3 -c 'import json, sys; print(round(json.load(sys.stdin)["jobs"][0]["write"]["bw_bytes"] / 1e6))')
		c1=$(cpu_ms "$aqd")
		rm -f $d/mnt/sw.*
		gen=$(cd $d && "$tree/bin/aq" bench gen --kind shards --files 8 --file-size 268435456 --dir /g1 \
			--cluster $d/var/cluster.conf 2>&1 | grep -o '[0-9.]* MB/s written')
		c2=$(cpu_ms "$aqd")
		echo "$tree fio ${fio_mb} MB/s (aqd $((c1 - c0)) ms cpu); gen $gen (aqd $((c2 - c1)) ms cpu)"
		"$tree/bin/aq" down --data $d/var --mount $d/mnt >/dev/null 2>&1
		rm -rf $d
	done
done
