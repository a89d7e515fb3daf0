#!/bin/bash
# ab_fsync.sh ROUNDS TREE... - `aq bench fsync` (fsync, then --datasync) of each built
# tree in turn, ROUNDS times, each on a fresh `aq up` in /tmp/abf; prints one JSON line
# per run: "TREE MODE JSON" (docs/performance.md, "fsync: the metadata log's sync beside
# the segment's"). A tree is a checkout with bin/ built, e.g. `git worktree add /tmp/base REV`.
set -u
rounds=$1
shift
for _ in $(seq "$rounds"); do
	for tree in "$@"; do
		d=/tmp/abf
		mkdir -p $d
		"$tree/bin/aq" up --data $d/var --mount $d/mnt >/dev/null 2>&1 || { echo "$tree: aq up failed" >&2; exit 1; }
		mkdir $d/mnt/d
		echo "$tree fsync $("$tree/bin/aq" bench fsync --dir $d/mnt/d --ops 400 --json)"
		echo "$tree fdatasync $("$tree/bin/aq" bench fsync --dir $d/mnt/d --ops 400 --datasync --json)"
		"$tree/bin/aq" down --data $d/var --mount $d/mnt >/dev/null 2>&1
		rm -rf $d
	done
done
