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
      f"load average at the end {' '.join(load)}. The machine was shared with other builds while this ran: "
      "absolute numbers are noisy, ratios less so.\n")
# The issue-15 targets with their recorded before figures (kept by hand: the old code cannot be
# built with today's harness); the sections below re-measure the after figures.
print(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets.md")).read())
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
