"""SQLite on a directory: T transactions of R rows each, in journal_mode delete and then
wal, and the seconds each took (every transaction takes and drops fcntl locks several
times, and fsyncs). Usage: python3 bench/sqlite_tx.py DIR [T] [R] [ROUNDS]; prints one
line per round and the medians."""
import os
import sqlite3
import statistics
import sys
import time


def one(path, mode, tx, rows):
    for suffix in ("", "-journal", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    con = sqlite3.connect(path)
    con.execute(f"pragma journal_mode={mode}")
    con.execute("create table t (k integer primary key, v text)")
    t0 = time.monotonic()
    for i in range(tx):
        with con:
            con.executemany("insert into t values (?, ?)", ((i * rows + j, "x" * 100) for j in range(rows)))
    took = time.monotonic() - t0
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert con.execute("select count(*) from t").fetchone()[0] == tx * rows
    con.close()
    return took


def main():
    d = sys.argv[1]
    tx, rows, rounds = (int(a) for a in (sys.argv[2:] + ["50", "200", "3"][len(sys.argv) - 2:])[:3])
    got = {"delete": [], "wal": []}
    for r in range(rounds):
        for mode in got:
            got[mode].append(one(os.path.join(d, "bench.db"), mode, tx, rows))
        print(f"round {r + 1}: delete {got['delete'][-1]:.3f} s, wal {got['wal'][-1]:.3f} s", flush=True)
    print(f"median: delete {statistics.median(got['delete']):.3f} s, wal {statistics.median(got['wal']):.3f} s")


if __name__ == "__main__":
    main()
