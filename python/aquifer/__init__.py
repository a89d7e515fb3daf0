"""aquifer - Python access to an Aquifer cluster through libaq (ctypes, nothing to compile).

    import aquifer
    c = aquifer.connect()              # cluster_file, else $AQ_CLUSTER, else ./var/cluster.conf
    with c.open("/data/x.bin") as f:
        n = f.readinto(buf)            # straight into buf: bytearray, memoryview, numpy array
    for name in c.listdir("/data"):    # streamed a page at a time
        ...
    blobs = c.read_many(["/data/a", ("/data/b", 0, 4096)])   # many reads in flight

Errors are OSError subclasses with errno (FileNotFoundError, PermissionError...).
aquifer.torch holds the PyTorch datasets.
"""
from ._lib import Attr, Change, Dirent, Io
from .client import Client, Entry, File, connect

__all__ = ["connect", "Client", "File", "Entry", "Attr", "Dirent", "Change", "Io"]
