#!/bin/bash
# ab_small_writes.sh ROUNDS TARBALL "ENV=VALUE"... - small writes through the mount with
# each environment in turn (e.g. "AQ_MOUNT_KILLPRIV_V2=0" "AQ_MOUNT_KILLPRIV_V2=1"; the
# mount and aqd inherit it from `aq up`), ROUNDS times, each on a fresh `aq up` of this
# tree in /tmp/absw: fio's 4 KiB sequential writes (256 MiB, ending in fsync) as root and
# as nobody (a writer without CAP_FSETID, whose writes ask the mount to drop setuid), 4
# KiB random writes for 10 s, and an untar of TARBALL ending in sync. Prints one line per
# run (docs/performance.md, "Writes without a GETXATTR each").
set -u
rounds=$1
tarball=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
iops() { python3 -c 'import json, sys; print(round(json.load(sys.stdin)["jobs"][0]["write"]["iops"]))'; }
for _ in $(seq "$rounds"); do
	for envset in "$@"; do
		d=/tmp/absw
		mkdir -p $d
		env "$envset" "$root/bin/aq" up --data $d/var --mount $d/mnt >/dev/null 2>&1 ||
			{ echo "$envset: aq up failed" >&2; exit 1; }
		mkdir $d/mnt/w $d/mnt/ut && chmod 777 $d/mnt/w
		seq=$(fio --name=s --directory=$d/mnt/w --ioengine=psync --rw=write --bs=4k --size=256m --end_fsync=1 \
			--output-format=json 2>/dev/null | iops)
		nob=$(setpriv --reuid=65534 --regid=65534 --clear-groups fio --name=n --directory=$d/mnt/w \
			--ioengine=psync --rw=write --bs=4k --size=256m --end_fsync=1 --output-format=json 2>/dev/null | iops)
		rnd=$(fio --name=r --directory=$d/mnt/w --ioengine=psync --rw=randwrite --bs=4k --size=256m --runtime=10 \
			--time_based --output-format=json 2>/dev/null | iops)
		sync
		t0=$(date +%s.%N)
		(cd $d/mnt/ut && tar xf "$tarball" && sync)
		t1=$(date +%s.%N)
		echo "$envset seqwrite4k $seq IOPS, as nobody $nob IOPS, randwrite4k $rnd IOPS, untar $(echo "$t1 - $t0" | bc) s"
		"$root/bin/aq" down --data $d/var --mount $d/mnt >/dev/null 2>&1
		rm -rf $d
	done
done
