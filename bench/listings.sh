#!/bin/bash
# bench/listings.sh OLD_BINDIR NEW_BINDIR TARBALL [ROUNDS]
# A/B of two mounts on listings, on one fresh `aq up` of NEW_BINDIR's build: untars TARBALL
# into the mount and makes a directory of 2,000 empty files; then, ROUNDS times (default
# 3), mounts each build in turn and prints the median of five `find` of the tree and of
# fifteen `os.listdir` of the 2,000 names (docs/performance.md, "Listings through the
# mount").
set -e
old=$1; new=$2; tarball=$3; rounds=${4:-3}
d=$(mktemp -d /tmp/aq-list.XXXXXX)
"$new/aq" up --data "$d/var" --mount "$d/mnt" >/dev/null
trap '"$new/aq" down --data "$d/var" --mount "$d/mnt" >/dev/null 2>&1; rm -rf "$d"' EXIT
mkdir "$d/mnt/ut"
tar xf "$tarball" -C "$d/mnt/ut"
python3 -c "
import os, sys
os.mkdir(sys.argv[1])
for i in range(2000):
    open(os.path.join(sys.argv[1], 'f%05d' % i), 'w').close()" "$d/mnt/l2k"
for _ in $(seq "$rounds"); do
	for side in old new; do
		bin=$old; [ "$side" = new ] && bin=$new
		fusermount3 -u "$d/mnt"
		"$bin/aq" mount "$d/mnt" --cluster "$d/var/cluster.conf"
		python3 - "$side" "$d/mnt" <<'PY'
import os, statistics, subprocess, sys, time
side, mnt = sys.argv[1], sys.argv[2]
def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
find = [timed(lambda: subprocess.run(["find", f"{mnt}/ut"], stdout=subprocess.DEVNULL, check=True))
        for _ in range(5)]
ls = [timed(lambda: os.listdir(f"{mnt}/l2k")) for _ in range(15)]
print(f"{side} find {statistics.median(find) * 1e3:.0f} ms, os.listdir of 2,000 {statistics.median(ls) * 1e3:.2f} ms")
PY
	done
done
