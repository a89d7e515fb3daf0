#!/bin/bash
# bench/copiers.sh OLD_BINDIR NEW_BINDIR TARBALL [ROUNDS]
# A/B of two builds on what copiers do, each run on a fresh `aq up` of its own build:
# untar TARBALL into the mount, `cp -a` and `rsync -a` of the same tree (untarred once on
# the local disk) into it, then `dbench -t 10 4` there; prints seconds (MB/s for dbench)
# per run, the builds alternated, ROUNDS times (default 3). docs/performance.md,
# "Attributes with the bytes".
set -e
old=$1; new=$2; tarball=$3; rounds=${4:-3}
src=$(mktemp -d /tmp/aq-copiers-src.XXXXXX)
trap 'rm -rf "$src"' EXIT
tar xf "$tarball" -C "$src"
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc | cut -c1-5; }
for _ in $(seq "$rounds"); do
	for side in old new; do
		bin=$old; [ "$side" = new ] && bin=$new
		d=$(mktemp -d /tmp/aq-copiers.XXXXXX)
		"$bin/aq" up --data "$d/var" --mount "$d/mnt" >/dev/null
		mkdir "$d/mnt/tar" "$d/mnt/cp" "$d/mnt/rsync" "$d/mnt/dbench"
		u=$(secs tar xf "$tarball" -C "$d/mnt/tar")
		c=$(secs cp -a "$src/." "$d/mnt/cp/")
		r=$(secs rsync -a "$src/" "$d/mnt/rsync/")
		db=$(dbench -D "$d/mnt/dbench" -t 10 4 2>/dev/null | awk '/Throughput/ {print $2}')
		echo "$side untar $u cp-a $c rsync $r dbench $db"
		"$bin/aq" down --data "$d/var" --mount "$d/mnt" >/dev/null 2>&1
		rm -rf "$d"
	done
done
