#!/usr/bin/python3
"""bench_loader.py - samples/s of a PyTorch DataLoader over AquiferDataset (libaq's
batched reads) beside the same DataLoader over plain files on the FUSE mount and over a
local copy: same dataset, same workers and batch size, same run, epochs interleaved
(aquifer, fuse, local, aquifer, ...) so that drift hits every side alike.

The dataset is one written by `aq bench gen --kind images` (a MANIFEST lists every file's
size and crc32c); every sample's length is checked, and its crc32c too when libaq exports
crc32c (it does today, outside aq.h). A sample is one whole file.

    aq bench gen --files 20000 --file-size 110000 --dir /ds --local /tmp/ds
    python3 python/bench_loader.py --dir /ds --mount-dir ./mnt/ds --local-dir /tmp/ds --workers 4

Pages of local and mounted files stay in the kernel's cache between epochs; --drop-caches
(root) empties it before every epoch of every side.
"""
import argparse
import ctypes
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch.utils.data  # noqa: E402

import aquifer  # noqa: E402
from aquifer._lib import lib  # noqa: E402
from aquifer.torch import AquiferDataset  # noqa: E402

try:
    _crc32c = lib.crc32c
    _crc32c.restype, _crc32c.argtypes = ctypes.c_uint32, [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
except AttributeError:
    _crc32c = None


def crc32c(data):
    n = len(data)
    if isinstance(data, bytes):
        return _crc32c(0, data, n)
    return _crc32c(0, (ctypes.c_char * n).from_buffer(data) if n else None, n)


def read_manifest(text):
    """[(name, size, crc)] of an images dataset's MANIFEST."""
    lines = text.splitlines()
    head = lines[0].split()
    if head[:2] != ["aquifer-dataset", "1"] or "kind=images" not in head:
        sys.exit("bench_loader: needs an `aq bench gen --kind images` dataset (MANIFEST header: %r)" % lines[0])
    return [(n, int(s), int(c, 16)) for n, s, c, *_ in (ln.split() for ln in lines[1:] if ln)]


class PlainFiles(torch.utils.data.Dataset):
    """The same samples read with open/read from a host directory (the mount or local)."""

    def __init__(self, root, names):
        self.paths = [os.path.join(root, n) for n in names]

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with open(self.paths[i], "rb") as f:
            return f.read()


class Checked(torch.utils.data.Dataset):
    """Wraps a dataset of raw samples: checks each against the MANIFEST, yields its length
    (so collation costs nothing). Batches go to the base's __getitems__ when it has one."""

    def __init__(self, base, manifest, verify):
        self.base, self.manifest, self.verify = base, manifest, verify

    def __len__(self):
        return len(self.base)

    def _check(self, i, data):
        name, size, crc = self.manifest[i]
        if len(data) != size or (self.verify and crc32c(data) != crc):
            raise RuntimeError(f"{name}: wrong content ({len(data)} bytes, wanted {size})")
        return size

    def __getitem__(self, i):
        return self._check(i, self.base[i])

    def __getitems__(self, indices):
        if hasattr(self.base, "__getitems__"):
            datas = self.base.__getitems__(indices)
        else:
            datas = [self.base[i] for i in indices]
        return [self._check(i, d) for i, d in zip(indices, datas)]


def raw(data):
    """AquiferDataset's transform: the bytearray libaq filled, as is (no copy)."""
    return data


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, help="the dataset inside Aquifer (e.g. /ds)")
    ap.add_argument("--mount-dir", help="the same dataset through the FUSE mount")
    ap.add_argument("--local-dir", help="a copy on a local file system")
    ap.add_argument("--cluster", help="cluster file (default $AQ_CLUSTER, else ./var/cluster.conf)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="use the first N files only")
    ap.add_argument("--no-verify", action="store_true", help="check lengths only, not crc32c")
    ap.add_argument("--drop-caches", action="store_true", help="drop the page cache before every epoch (root)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    client = aquifer.connect(a.cluster)
    with client.open(a.dir.rstrip("/") + "/MANIFEST", "rb") as f:
        manifest = read_manifest(f.read().decode())
    if a.limit:
        manifest = manifest[:a.limit]
    names = [m[0] for m in manifest]
    verify = _crc32c is not None and not a.no_verify
    sides = {"aquifer": AquiferDataset([f"{a.dir.rstrip('/')}/{n}" for n in names], transform=raw,
                                       cluster_file=a.cluster)}
    if a.mount_dir:
        sides["fuse"] = PlainFiles(a.mount_dir, names)
    if a.local_dir:
        sides["local"] = PlainFiles(a.local_dir, names)
    total_bytes = sum(m[1] for m in manifest)
    secs = {s: [] for s in sides}
    for epoch in range(a.epochs):
        for side, ds in sides.items():
            loader = torch.utils.data.DataLoader(Checked(ds, manifest, verify), batch_size=a.batch_size,
                                                 shuffle=True, num_workers=a.workers)
            if a.drop_caches:
                drop_caches()
            t0 = time.perf_counter()
            n = sum(len(batch) for batch in loader)
            dt = time.perf_counter() - t0
            assert n == len(manifest), f"{side}: {n} samples of {len(manifest)}"
            secs[side].append(dt)
            if not a.json:
                print(f"epoch {epoch} {side:8s} {n / dt:10.0f} samples/s {total_bytes / dt / 1e6:8.1f} MB/s",
                      flush=True)
    result = {"files": len(manifest), "bytes": total_bytes, "workers": a.workers, "batch_size": a.batch_size,
              "epochs": a.epochs, "verified": "crc32c" if verify else "length", "sides": {}}
    for side, ts in secs.items():
        best = min(ts)
        result["sides"][side] = {"samples_per_s": round(len(manifest) * len(ts) / sum(ts)),
                                 "best_epoch_samples_per_s": round(len(manifest) / best),
                                 "mb_per_s": round(total_bytes * len(ts) / sum(ts) / 1e6, 1),
                                 "epoch_s": [round(t, 3) for t in ts]}
    if a.json:
        print(json.dumps(result))
    else:
        print(f"{len(manifest)} files, {total_bytes / 1e6:.1f} MB, {a.workers} workers, batch {a.batch_size}, "
              f"{a.epochs} epochs, samples checked by {result['verified']}")
        for side, r in result["sides"].items():
            print(f"  {side:8s} {r['samples_per_s']:10d} samples/s  {r['mb_per_s']:8.1f} MB/s  "
                  f"(best epoch {r['best_epoch_samples_per_s']})")
    client.close()


if __name__ == "__main__":
    main()
