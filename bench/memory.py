#!/usr/bin/env python3
"""Memory of `larder serve` under uploads (issue 11, section 5), measured from /proc.

    bench/memory.py [path/to/larder]      (default: target/release/larder)

1. memory://: RSS at start, after twelve 50 MB uploads each aborted half-way (the client
   closes after 25 MB), and a few seconds later.
2. sqlite://: peak RSS (VmHWM) around one 50 MB PUT, against the same PUT to memory://.
Prints figures in MB; no pass/fail (a benchmark, not a test).
"""
import os, socket, subprocess, sys, tempfile, time

LARDER = sys.argv[1] if len(sys.argv) > 1 else "target/release/larder"
MB = 1 << 20


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MB
    return 0.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def serve(store):
    port = free_port()
    p = subprocess.Popen(
        [LARDER, "serve", "--listen", f"127.0.0.1:{port}", "--store", store],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return p, port
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


def put(port, key, size, send=None):
    """PUT `size` bytes; with `send`, only that many are sent before closing (an abort)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"PUT /v1/objects/{key} HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n\r\n".encode())
    chunk = b"x" * MB
    n = size if send is None else send
    while n > 0:
        s.sendall(chunk[: min(n, MB)])
        n -= min(n, MB)
    if send is None:
        s.settimeout(120)
        answer = s.recv(100)
        assert answer.startswith(b"HTTP/1.1 20"), answer
    s.close()


def aborted_uploads(store="memory://"):
    p, port = serve(store)
    time.sleep(1)
    base = status(p.pid, "VmRSS")
    for i in range(12):
        put(port, f"aborted{i}", 50 * MB, send=25 * MB)
        time.sleep(0.2)
    time.sleep(1)
    after = status(p.pid, "VmRSS")
    time.sleep(5)
    later = status(p.pid, "VmRSS")
    p.terminate(); p.wait()
    print(f"{store}: RSS at start {base:.1f} MB, after 12 aborted 50 MB uploads {after:.1f} MB, "
          f"5 s later {later:.1f} MB")


def peak_of_put(store, size_mb=50):
    p, port = serve(store)
    time.sleep(1)
    base = status(p.pid, "VmHWM")
    put(port, "big", size_mb * MB)
    peak = status(p.pid, "VmHWM")
    rss = status(p.pid, "VmRSS")
    p.terminate(); p.wait()
    print(f"{store.split(':')[0]}: one {size_mb} MB PUT: peak RSS {peak:.1f} MB "
          f"(before {base:.1f} MB, so +{peak - base:.1f} MB = {(peak - base) / size_mb:.2f}x the body); "
          f"RSS after {rss:.1f} MB")


if __name__ == "__main__":
    aborted_uploads()
    with tempfile.TemporaryDirectory() as d:
        peak_of_put(f"sqlite://{d}/db.sqlite")
    peak_of_put("memory://")
