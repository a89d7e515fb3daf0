#!/bin/bash
# bench/two_mounts.sh MNT_A MNT_B LOCAL_IMAGES [ROUNDS]
# A/B of two mounts of one cluster (say one with FUSE over io_uring and one `aq mount
# --no-io-uring`), taken in turn, ROUNDS times (default 3): `aq bench meta --via fuse`
# (30,000 files, 2 threads) in each; dd of 4 KiB and 1 MiB writes with an fsync, then a
# cold 1 MiB read of what it wrote; `aq bench train --via fuse --cold --compute-us 0` of
# the images in MNT/img beside LOCAL_IMAGES (made by `aq bench gen --kind images --via
# fuse --dir MNT_A/img --local LOCAL_IMAGES`). docs/performance.md, "FUSE over io_uring".
set -e
a=$1; b=$2; local_img=$3; rounds=${4:-3}
aq=$(dirname "$0")/../bin/aq
for r in $(seq "$rounds"); do
	for m in "$a" "$b"; do
		echo "round $r $m meta $("$aq" bench meta --via fuse --dir "$m" --files 30000 --threads 2 --json |
			python3 -c 'import json, sys; d = json.load(sys.stdin)["aquifer"]
print(" ".join("%s=%d" % (k, v) for k, v in d.items() if not isinstance(v, list) and "rss" not in k))')"
		w4=$(dd if=/dev/zero of="$m/ab-w4" bs=4k count=50000 conv=fsync 2>&1 | tail -1 | awk '{print $(NF-1), $NF}')
		w1=$(dd if=/dev/zero of="$m/ab-w1" bs=1M count=1024 conv=fsync 2>&1 | tail -1 | awk '{print $(NF-1), $NF}')
		echo 3 >/proc/sys/vm/drop_caches
		r1=$(dd if="$m/ab-w1" of=/dev/null bs=1M 2>&1 | tail -1 | awk '{print $(NF-1), $NF}')
		rm -f "$m/ab-w4" "$m/ab-w1"
		echo "round $r $m dd write-4k $w4, write-1M $w1, read-1M-cold $r1"
		echo "round $r $m images $("$aq" bench train --via fuse --dir "$m/img" --compare-local "$local_img" --cold \
			--compute-us 0 --json | python3 -c 'import json, sys; d = json.load(sys.stdin); a, l = d["aquifer"], d["local"]
print("aquifer=%d local=%d ratio=%.2f" % (a["samples_per_s"], l["samples_per_s"], a["samples_per_s"] / l["samples_per_s"]))')"
	done
done
