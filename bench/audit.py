"""Benchmark: durable audit appends and filtered queries over a million records.

Fills a fresh store (``--records``, default 1,000,000, over 100 tenants x 10 cells, a mix
of kinds and decisions like a busy host's, spread over 30 days) through a raw connection
with the trail's own schema and indexes (fast, not the measured path). Then measures:

- appends through the real path (``Store.audit_many`` / ``Store.audit``, fsynced commits;
  ``--rounds`` rounds, the order rotated each round; medians, and ratios as the median of
  within-round ratios):
  one thread with ``audit_many`` batches; 16 threads appending single records; one thread
  appending single records (one fsync each: what a commit costs on this disk). Baseline in
  the same run: raw sqlite ``executemany`` + ``COMMIT`` on a WAL connection with
  ``synchronous=FULL`` (the same durability), same batch size.
- for reference, the path before this design: one transaction per record on the store's
  connection with ``synchronous=NORMAL`` (no fsync per commit), 16 threads.
- queries through ``AuditLog.query`` (SQL, rows, JSON details decoded; the newest 100):
  p50/p99 over ``--queries`` runs with random tenants/cells, and each query's
  EXPLAIN QUERY PLAN.

    .venv/bin/python bench/audit.py [--records 1000000] [--seconds 3] [--rounds 3] [--queries 200] \
        [--dir DIR] [--output results/audit.json]

The store goes in ``--dir`` (default: a temporary directory under /var/tmp: it must be a
real disk, fsync on tmpfs costs nothing) and is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agentcell.control import AuditRecord, Store
from agentcell.control._audit import AuditQuery

TENANTS = [f"t{i:03d}" for i in range(100)]
CELLS = [f"c{i}" for i in range(10)]
DAY = 86400.0

# kind, share, deny share, actor
MIX = (
    ("egress", 0.70, 0.10, "egress-gate"),
    ("docker", 0.15, 0.05, "docker-proxy"),
    ("lifecycle", 0.05, 0.02, "reconciler"),
    ("api", 0.04, 0.0, "admin"),
    ("isolation", 0.03, 0.01, "reconciler"),
    ("health", 0.01, 0.30, "reconciler"),
    ("policy", 0.01, 0.0, "admin"),
    ("auth", 0.005, 1.0, "client 127.0.0.1"),
    ("exec", 0.005, 0.0, "admin"),
)

DETAILS = {
    "egress": json.dumps(
        {
            "method": "CONNECT",
            "host": "api.allowed.test",
            "port": 443,
            "address": "203.0.113.7",
            "rule": "api.allowed.test:443",
            "bytes_up": 1834,
            "bytes_down": 52311,
            "duration_ms": 231.4,
        },
        sort_keys=True,
    ),
    "docker": json.dumps(
        {"method": "POST", "path": "/v1.41/containers/create", "object": "", "status": 201},
        sort_keys=True,
    ),
}


def rows(n: int, now: float, seed: int = 1) -> Iterator[tuple[Any, ...]]:
    rnd = random.Random(seed)
    kinds = [m[0] for m in MIX]
    weights = [m[1] for m in MIX]
    table = {m[0]: m for m in MIX}
    start = now - 30 * DAY
    step = 30 * DAY / n
    for i in range(n):
        kind = rnd.choices(kinds, weights)[0]
        _, _, deny, actor = table[kind]
        decision = "deny" if rnd.random() < deny else "allow"
        tenant, cell = rnd.choice(TENANTS), rnd.choice(CELLS)
        if kind == "auth":
            tenant = cell = ""
        # Sidecar records arrive a little late, carrying their own time.
        t = start + i * step - (rnd.random() * 2 if kind in ("egress", "docker") else 0)
        reason = "allowed by rule" if decision == "allow" else "host not in policy"
        yield (t, tenant, cell, actor, kind, decision, reason, DETAILS.get(kind, "{}"))


def fill(path: Path, n: int, now: float) -> float:
    Store(path).close()  # the real schema and indexes
    t0 = time.perf_counter()
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO audit(time, tenant, cell, actor, kind, decision, reason, details) "
        "VALUES (?,?,?,?,?,?,?,?)",
        rows(n, now),
    )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.perf_counter() - t0


def record(i: int) -> AuditRecord:
    return AuditRecord(
        TENANTS[i % 100],
        CELLS[i % 10],
        "egress-gate",
        "egress",
        "allow",
        "allowed by rule",
        {"host": "api.allowed.test", "port": 443, "bytes_down": i},
    )


def baseline(path: Path, batch: int, seconds: float) -> float:
    """Raw executemany + COMMIT (fsynced: WAL, synchronous=FULL), records/s."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA synchronous=FULL")
    now = time.time()
    data = [
        (now, r.tenant, r.cell, r.actor, r.kind, r.decision, r.reason, json.dumps(r.details))
        for r in map(record, range(batch))
    ]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO audit(time, tenant, cell, actor, kind, decision, reason, details) "
            "VALUES (?,?,?,?,?,?,?,?)",
            data,
        )
        db.execute("COMMIT")
        n += batch
    rate = n / (time.perf_counter() - t0)
    db.close()
    return rate


def batches(store: Store, batch: int, seconds: float) -> float:
    recs = [record(i) for i in range(batch)]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        store.audit_many(recs)
        n += batch
    return n / (time.perf_counter() - t0)


def threaded(threads: int, seconds: float, append: Callable[[int], None]) -> float:
    """Records/s when ``threads`` threads each call ``append(i)`` for ``seconds``."""
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def run(k: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            append(i)
            i += 1
        counts[k] = i

    t0 = time.perf_counter()
    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def singles(store: Store, threads: int, seconds: float) -> float:
    return threaded(threads, seconds, lambda i: store.audit(record(i)))


def previous(path: Path, threads: int, seconds: float) -> float:
    """The path before group commit: the store's one connection (synchronous=NORMAL, so no
    fsync per commit: not durable), one transaction per record under a lock, records/s."""
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")
    lock = threading.Lock()

    def append(i: int) -> None:
        r = record(i)
        with lock:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO audit(time, tenant, cell, actor, kind, decision, reason, details) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (
                    time.time(),
                    r.tenant,
                    r.cell,
                    r.actor,
                    r.kind,
                    r.decision,
                    r.reason,
                    json.dumps(r.details, sort_keys=True),
                ),
            )
            db.execute("COMMIT")

    rate = threaded(threads, seconds, append)
    db.close()
    return rate


def queries(now: float) -> dict[str, Any]:
    """Name -> a function of a Random giving an AuditQuery."""
    return {
        "tenant": lambda r: AuditQuery(tenant=r.choice(TENANTS)),
        "tenant+cell": lambda r: AuditQuery(tenant=r.choice(TENANTS), cell=r.choice(CELLS)),
        "tenant+kind+denied": lambda r: AuditQuery(
            tenant=r.choice(TENANTS), kinds=("egress",), decision="deny"
        ),
        "kind+since 1h": lambda r: AuditQuery(
            kinds=(r.choice(["egress", "docker"]),), since=now - 3600
        ),
        "rare kind+since 1h": lambda r: AuditQuery(kinds=("auth",), since=now - 3600),
        "tenant+since 1h": lambda r: AuditQuery(tenant=r.choice(TENANTS), since=now - 3600),
        "tenant+since 7d": lambda r: AuditQuery(tenant=r.choice(TENANTS), since=now - 7 * DAY),
        "newest 100": lambda r: AuditQuery(),
        "tenant+denied+since 1d": lambda r: AuditQuery(
            tenant=r.choice(TENANTS), decision="deny", since=now - DAY
        ),
    }


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "audit.json")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="agentcell-bench-audit-", dir=args.dir or "/var/tmp"))
    out: dict[str, Any] = {"records": args.records}
    try:
        path = work / "state.db"
        now = time.time()
        out["fill_seconds"] = round(fill(path, args.records, now), 1)
        print(f"filled {args.records} records in {out['fill_seconds']} s", flush=True)

        store = Store(path)
        log = store.audit_log
        rnd = random.Random(7)
        results: dict[str, Any] = {}
        for name, make in queries(now).items():
            times, count = [], 0
            for _ in range(args.queries):
                q = make(rnd)
                t0 = time.perf_counter()
                got = log.query(q)
                times.append((time.perf_counter() - t0) * 1000)
                count += len(got)
            results[name] = {
                "p50_ms": round(pct(times, 50), 2),
                "p99_ms": round(pct(times, 99), 2),
                "max_ms": round(max(times), 2),
                "mean_rows": round(count / args.queries, 1),
                "plan": log.plan(make(rnd)),
            }
            print(
                f"query {name:24s} p50 {results[name]['p50_ms']:7.2f} ms  "
                f"p99 {results[name]['p99_ms']:7.2f} ms  rows {results[name]['mean_rows']:5.1f}  "
                f"plan: {' | '.join(results[name]['plan'])}",
                flush=True,
            )
        out["queries"] = results

        base_name = "baseline raw executemany+fsync"
        contenders: dict[str, Any] = {
            base_name: lambda: baseline(path, args.batch, args.seconds),
            "audit_many, 1 thread": lambda: batches(store, args.batch, args.seconds),
            f"audit, {args.threads} threads": lambda: singles(store, args.threads, args.seconds),
            "audit, 1 thread (1 fsync per record)": lambda: singles(store, 1, args.seconds),
            f"previous path, {args.threads} threads, NOT durable": lambda: previous(
                path, args.threads, args.seconds
            ),
        }
        names = list(contenders)
        rounds: list[dict[str, float]] = []
        for k in range(args.rounds):  # the order rotates, so a noisy moment hits all in turn
            rates = {n: contenders[n]() for n in names[k % len(names) :] + names[: k % len(names)]}
            rounds.append(rates)
            print(f"round {k + 1}: " + ", ".join(f"{n} {v:.0f}/s" for n, v in rates.items()))
        appends = {n: statistics.median(r[n] for r in rounds) for n in names}
        ratios = {n: statistics.median(r[n] / r[base_name] for r in rounds) for n in names}
        for name in names:
            print(
                f"append {name:46s} {appends[name]:9.0f} records/s  "
                f"({ratios[name]:.2f} x baseline, median of {args.rounds} rounds)"
            )
        out["appends_per_s"] = {k: round(v) for k, v in appends.items()}
        out["batch"] = args.batch
        out["ratio_to_baseline"] = {k: round(v, 3) for k, v in ratios.items()}
        out["rounds"] = [{k: round(v) for k, v in r.items()} for r in rounds]
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
