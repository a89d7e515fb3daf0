"""aquifer.torch - PyTorch datasets over Aquifer that read through libaq's batched reads.

    from torch.utils.data import DataLoader
    from aquifer.torch import AquiferDataset
    loader = DataLoader(AquiferDataset("/imagenet/train", transform=decode), batch_size=64, num_workers=8)

AquiferDataset is map-style (one sample per file, indexed in name order);
AquiferIterableDataset splits the files across DataLoader workers and distributed ranks,
reshuffles them every epoch from a seed, and reads them batch_size files at a time.

Invariants:
- The file list (name, inode, size) is taken once, when the dataset is made: one
  readdirplus listing of a directory, or asynchronous lookups of a list of paths. Reads go
  by inode, one round trip per file, so files must not be rewritten while a job reads them
  (a training set is written once). The list is held in compact arrays, names as one
  string each.
- Each process connects for itself, on its first read: a DataLoader worker forked from
  the main process never touches the main process's connection (libaq forbids it).
- Permissions are the process's own, checked once per file from the listing's attributes,
  since reads by inode skip the server's open-time check.
"""
import array
import math
import multiprocessing
import os
import random
import stat as statmod

import torch.distributed
import torch.utils.data

from ._lib import AQ_READDIR_PLUS
from .client import Client, _may_read

__all__ = ["AquiferDataset", "AquiferIterableDataset"]


class _FileList:
    """The files of a dataset, with what reading them by inode needs. Not a Dataset."""

    def __init__(self, path_or_paths, transform, cluster_file):
        self.transform = transform
        self.cluster_file = cluster_file
        self._client = None
        self._client_pid = None
        c = self._conn()
        self.names, self.inos, self.sizes = [], array.array("Q"), array.array("Q")
        self.denied = set()  # indices this process may not read
        if isinstance(path_or_paths, (str, bytes, os.PathLike)):
            self.root = os.fsdecode(path_or_paths).rstrip("/") or "/"
            ents = sorted((os.fsdecode(e.name), e.ino, e.attr.size, _may_read(e.attr))
                          for e in c._pages(self.root, AQ_READDIR_PLUS) if statmod.S_ISREG(e.attr.mode))
        else:
            self.root = None
            paths = [os.fsdecode(p) for p in path_or_paths]
            attrs = c._lookup_many(paths)
            for p, a in zip(paths, attrs):
                if not statmod.S_ISREG(a.mode):
                    raise IsADirectoryError(21, "not a regular file", p)
            ents = [(p, a.ino, a.size, _may_read(a)) for p, a in zip(paths, attrs)]
        for i, (name, ino, size, ok) in enumerate(ents):
            self.names.append(name)
            self.inos.append(ino)
            self.sizes.append(size)
            if not ok:
                self.denied.add(i)

    def _conn(self):
        """This process's Client, made on first use in each process (after a fork)."""
        if self._client is None or self._client_pid != os.getpid():
            self._client = Client(self.cluster_file)
            self._client_pid = os.getpid()
        return self._client

    def __getstate__(self):  # spawn/forkserver workers pickle the dataset: no connection
        state = self.__dict__.copy()
        state["_client"] = state["_client_pid"] = None
        return state

    def __len__(self):
        return len(self.names)

    def path(self, i):
        """The path inside Aquifer of sample i."""
        return self.names[i] if self.root is None else f"{self.root.rstrip('/')}/{self.names[i]}"

    def read(self, indices):
        """The samples at indices, read in one batch: transform(bytearray) when there is a
        transform (the bytearray is the buffer libaq filled, no copy), else bytes."""
        for i in indices:
            if i in self.denied:
                raise PermissionError(13, os.strerror(13), self.path(i))
        reads = [(self.inos[i], 0, self.sizes[i], self.sizes[i]) for i in indices]
        datas = self._conn().read_inodes(reads, names=[self.path(i) for i in indices])
        if self.transform is not None:
            return [self.transform(d) for d in datas]
        # bytes, so that DataLoader's default_collate hands back a list of samples
        return [bytes(d) for d in datas]


class AquiferDataset(_FileList, torch.utils.data.Dataset):
    """Map-style dataset: sample i is the i-th file (in name order) of the directory
    path_or_paths, or the i-th path of the list path_or_paths. An item is the file's bytes,
    or transform(data) where data is a writable bytearray (no copy: torch.frombuffer and
    numpy.frombuffer take it as is). The cluster is cluster_file, else $AQ_CLUSTER, else
    ./var/cluster.conf. DataLoader batches are read in one go (__getitems__)."""

    def __init__(self, path_or_paths, transform=None, cluster_file=None):
        _FileList.__init__(self, path_or_paths, transform, cluster_file)

    def __getitem__(self, i):
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} of {len(self)}")
        return self.read([i])[0]

    def __getitems__(self, indices):
        n = len(self)
        return self.read([i + n if i < 0 else i for i in indices])


def _rank_world():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class AquiferIterableDataset(_FileList, torch.utils.data.IterableDataset):
    """Iterable dataset over the same files as AquiferDataset: each epoch the files are
    shuffled from (seed, epoch) (when shuffle), split evenly across distributed ranks
    (padded by repeating a few files so every rank yields as many samples, as
    DistributedSampler does) and then across DataLoader workers, and read batch_size files
    per batched read.

    The epoch is set_epoch(e)'s when it was called (use it in distributed jobs, as with
    DistributedSampler), else an internal count of the iterations started: it is shared
    by the DataLoader workers through shared memory (made before they fork), so that the
    workers of one epoch agree on its order and the next epoch gets another."""

    def __init__(self, path_or_paths, batch_size=64, shuffle=True, seed=0, transform=None, cluster_file=None):
        _FileList.__init__(self, path_or_paths, transform, cluster_file)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = None
        self._started = multiprocessing.Value("q", 0)  # iterators started, all processes

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _this_epoch(self, workers):
        if self.epoch is not None:
            return self.epoch
        with self._started.get_lock():
            k = self._started.value
            self._started.value += 1
        return k // workers

    def _shard(self, rank, world, worker, workers, epoch):
        """The indices one worker of one rank reads in an epoch."""
        order = list(range(len(self)))
        if self.shuffle:
            random.Random(f"aquifer/{self.seed}/{epoch}").shuffle(order)
        if world > 1 and order:
            total = math.ceil(len(order) / world) * world
            order += order[:total - len(order)]
        return order[rank::world][worker::workers]

    def __len__(self):
        """Samples this rank yields per epoch (all its workers together)."""
        rank, world = _rank_world()
        return math.ceil(len(self.names) / world) if world > 1 else len(self.names)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = _rank_world()
        mine = self._shard(rank, world, worker, workers, self._this_epoch(workers))
        for k in range(0, len(mine), self.batch_size):
            yield from self.read(mine[k:k + self.batch_size])
