#!/bin/bash
# bench/small_files.sh BINDIR LABEL TARBALL
# One run on a fresh `aq up` of the build in BINDIR: untars TARBALL into the mount
# (caches dropped first; timed with the sync after it), then writes 3,000 files of 4 KiB
# through the mount from Python. Prints both; run two builds alternately and compare
# medians (docs/performance.md, "A flush commits the size with its last write").
set -e
bin=$1; label=$2; tarball=$3
d=$(mktemp -d /tmp/aq-small.XXXXXX)
"$bin/aq" up --data "$d/var" --mount "$d/mnt" >/dev/null
trap '"$bin/aq" down --data "$d/var" --mount "$d/mnt" >/dev/null 2>&1; rm -rf "$d"' EXIT
mkdir "$d/mnt/ut"
sync; echo 3 > /proc/sys/vm/drop_caches
t0=$(date +%s.%N); (cd "$d/mnt/ut" && tar xf "$tarball" && sync); t1=$(date +%s.%N)
python3 - "$d/mnt/small" <<'PY' > "$d/rate"
import os, sys, time
d = sys.argv[1]
os.mkdir(d)
t = time.monotonic()
for i in range(3000):
    with open(f"{d}/f{i}", "wb") as f:
        f.write(b"x" * 4096)
print(round(3000 / (time.monotonic() - t)))
PY
echo "$label untar $(echo "$t1 - $t0" | bc) s, small files $(cat "$d/rate")/s"
