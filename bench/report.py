"""Turns bench/results/all.tsv into BENCHMARKS.md: each figure as a ratio to the first row of its
case (the floor or ceiling measured in the same run), then min and median."""
import datetime, os, subprocess, sys

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
load = open("/proc/loadavg").read().split()[:3]
titles = {
    "memory": "Library, memory store (4 KiB values; µs per operation, lower is better)",
    "rss": "Memory per entry (RSS growth after 1,000,000 × 100-byte entries, own process each)",
    "fs": "Library, filesystem store (µs per operation, lower is better)",
    "hash": "SHA-256 throughput (MiB/s, higher is better)",
    "tiered": "Tiered store, hot reads of 256 keys × 4 KiB (reads/s, higher is better; ratio to the memory store alone)",
    "server": "HTTP server, 4 KiB body (wrk -t2 -c32, requests/s, higher is better)",
    "cas-http": "CAS contention over HTTP (8 clients, GET then PUT If-Match, retry on 412)",
    "sql": "SQL drivers: swap (µs/op, lower is better) and contended CAS (incr/s, higher is better) against the same protocol written by hand; sqlite PUT peak RSS",
    "cas-kv": "Contended CAS on Redis and NATS (8 workers, one key; increments/s, higher is better; first row: the same CAS loop by hand)",
    "objstore-list": "Object-store listings (ms, lower is better; LIST/HEAD request counts; first row: flat scan with a HEAD per blob)",
    "unstorage-driver": "unstorage's own http driver (node, 16 concurrent callers): unstorage's server against larder serve (operations/s, higher is better)",
}
print("# Benchmarks\n")
print("Produced by `bench/run` (see [bench/README.md](bench/README.md)). Each figure is the median")
print("of several runs after a warm-up, shown as a **ratio to the first row of its case** (the floor")
print("or ceiling, measured in the same run), then min and median in absolute units.\n")
print(f"Machine: {os.cpu_count()} CPUs, {cpu}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
      f"load average at the end {' '.join(load)}. "
      + ("The machine was shared with other work while this ran (5-minute load above its CPUs): "
         "absolute numbers are noisy, ratios less so.\n"
         if float(load[1]) > (os.cpu_count() or 1) else
         "The machine was otherwise idle (5-minute load within its CPUs).\n"))
# The commit bench/run measured (written when it started), else the checkout's.
commit_file = os.path.join(os.path.dirname(os.path.abspath(sys.argv[1])), "commit")
commit = (open(commit_file).read().strip() if os.path.exists(commit_file) else
          subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()) or "?"
print(f"Code measured: `{commit}`.\n")
# The issue-15 targets with their recorded before figures (kept by hand: the old code cannot be
# built with today's harness); the sections below re-measure the after figures.
print(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets.md")).read())


def median_of(group, case, imp):
    """The median of the first row whose group and case match and whose implementation contains imp."""
    for g, c, i, _mn, med, _unit in rows:
        if g == group and c == case and imp in i:
            try:
                return float(med)
            except ValueError:
                return None
    return None


# Each target row re-measured by this run: (path, group, case, Larder's implementation, the
# baseline's, how to compare). "time": Larder / baseline of a cost; "rate": Larder / baseline of a
# throughput; "plus": Larder minus the baseline, in the unit of the row.
THIS_RUN = [
    ("HTTP GET hit vs bare hyper (wrk)", "server", "GET hit", "larder serve memory://", "hyper baseline", "rate"),
    ("HTTP conditional GET (304) vs bare hyper (wrk)", "server", "GET If-None-Match (304)", "larder serve memory://", "hyper baseline", "rate"),
    ("HTTP PUT 4 KiB vs bare hyper (wrk)", "server", "PUT 4KiB", "larder serve memory://", "hyper baseline", "rate"),
    ("HTTP PUT 4 KiB vs unstorage's node server (wrk)", "server", "PUT 4KiB", "larder serve memory://", "unstorage createStorageServer", "rate"),
    ("HTTP PUT 4 KiB vs hyper + SHA-256 of the body (context: the ceiling of a server with content ETags)", "server", "PUT 4KiB", "larder serve memory://", "hyper + SHA-256", "rate"),
    ("context: hyper + SHA-256 of the body vs unstorage's node server (PUT 4 KiB)", "server", "PUT 4KiB", "hyper + SHA-256", "unstorage createStorageServer", "rate"),
    ("fs get 4 KiB vs std::fs::read, 1 task", "fs", "get 4096B x1", "larder fs", "std::fs::read", "time"),
    ("fs get 4 KiB vs std::fs::read, 8 tasks", "fs", "get 4096B x8", "larder fs", "std::fs::read", "time"),
    ("fs get 1 MiB vs std::fs::read, 1 task", "fs", "get 1048576B x1", "larder fs", "std::fs::read", "time"),
    ("fs get 1 MiB vs std::fs::read, 8 tasks", "fs", "get 1048576B x8", "larder fs", "std::fs::read", "time"),
    ("fs get 1 MiB vs the old floor (bytes dropped in the blocking thread), 8 tasks", "fs", "get 1048576B x8", "larder fs", "bytes dropped", "time"),
    ("fs put with fsync vs write+fsync+rename+dir fsync, 1 task", "fs", "put 4096B x1, fsync", "larder fs (fsync)", "std::fs write", "time"),
    ("fs put with fsync vs write+fsync+rename+dir fsync, 8 tasks", "fs", "put 4096B x8, fsync", "larder fs (fsync)", "std::fs write", "time"),
    ("memory get vs object_store InMemory, 1 task", "memory", "get 4096B x1", "larder memory", "object_store InMemory", "time"),
    ("memory get vs object_store InMemory, 8 tasks", "memory", "get 4096B x8", "larder memory", "object_store InMemory", "time"),
    ("memory put vs SHA-256 of the body alone, 1 task (µs)", "memory", "put 4096B x1", "larder memory", "sha256 of the body alone", "plus"),
    ("memory put vs SHA-256 of the body alone, 8 tasks (µs)", "memory", "put 4096B x8", "larder memory", "sha256 of the body alone", "plus"),
    ("memory RSS per 100-byte entry vs object_store", "rss", "1M x 100B entries", "larder", "object_store", "time"),
    ("uncontended swap vs one guarded UPDATE, PostgreSQL", "sql", "postgres swap, 1 task, 100 B", "larder swap", "hand-written guarded UPDATE", "time"),
    ("uncontended swap vs one guarded UPDATE, MySQL", "sql", "mysql swap, 1 task, 100 B", "larder swap", "hand-written guarded UPDATE", "time"),
    ("contended CAS (8 workers) vs the same CAS by hand, PostgreSQL", "sql", "postgres CAS increment, 8 workers, one key", "larder", "hand-written loop", "rate"),
    ("contended CAS (8 workers) vs the same CAS by hand, MySQL", "sql", "mysql CAS increment, 8 workers, one key", "larder", "hand-written loop", "rate"),
    ("contended CAS (8 workers) vs the same CAS by hand, Redis", "cas-kv", "redis, 8 workers, one key", "larder", "Lua compare-and-set", "rate"),
    ("contended CAS (8 workers) vs the same CAS by hand, NATS", "cas-kv", "nats, 8 workers, one key", "larder", "update(revision)", "rate"),
    ("hot tiered reads memory→fs→sqlite vs memory alone, 1 task", "tiered", "hot reads 4096B, 1 task(s)", "memory->fs->sqlite", "memory", "rate"),
    ("hot tiered reads memory→fs→sqlite vs memory alone, 4 tasks", "tiered", "hot reads 4096B, 4 task(s)", "memory->fs->sqlite", "memory", "rate"),
]
print("## Issue 15 targets, this run\n")
print("The rows above re-measured by this run, each against its baseline from the same run (medians).")
print("\"not measured\": the part did not run, or its service was absent. The listing row is in")
print("the object-store section below as request counts.\n")
print("| path | Larder | baseline | this run |")
print("|---|---:|---:|---:|")
for path, group, case, imp, base, how in THIS_RUN:
    a, b = median_of(group, case, imp), median_of(group, case, base)
    if a is None or b is None or not b:
        shown = "not measured"
    elif how == "plus":
        shown = f"{a - b:+.2f}"
    else:
        shown = f"{a / b:.2f}×"
    fmt = lambda x: "—" if x is None else f"{x:g}"
    print(f"| {path} | {fmt(a)} | {fmt(b)} | {shown} |")
print()
for group in dict.fromkeys(r[0] for r in rows):
    print(f"## {titles.get(group, group)}\n")
    if group == "fs":
        tmp = os.environ.get("BENCH_TMP") or "/tmp"
        df = subprocess.run(["df", "--output=source,fstype", tmp], capture_output=True, text=True).stdout.split()
        print(f"Files under `{tmp}` ({' on '.join(reversed(df[-2:])) if len(df) >= 2 else '?'}; set `BENCH_TMP` to move them). "
              "fsync rows measure that filesystem's journal as much as Larder: on a disk shared with other "
              "work they vary run to run by several times.\n")
    print("| case | implementation | ratio to first row | min | median | unit |")
    print("|---|---|---:|---:|---:|---|")
    base = {}
    for g, case, imp, mn, med, unit in (r for r in rows if r[0] == group):
        try:
            m = float(med)
            b = base.setdefault(case, m)
            ratio = f"{m / b:.2f}×" if b else "n/a"
        except ValueError:
            ratio = "n/a"
        print(f"| {case} | {imp} | {ratio} | {mn} | {med} | {unit} |")
    print()
