#!/usr/bin/env python3
"""Where a request's instructions go, from callgrind's per-function totals.

  callgrind_where.py N LABEL=RUN_N.out,RUN_2N.out ...

Each LABEL names two callgrind outputs of the same proxy setup, one that served N
requests and one that served 2N after the same warm-up (bench/callgrind's CG_KEEP=DIR
runs, bench/mesh-callgrind's BENCH_KEEP=DIR pids): the difference of each function's
self cost over N is what one request costs in it. Prints a markdown table of that cost
by area, one column per LABEL, for docs/benchmarks.md, and below it the allocations per
request (calls to malloc, calloc and realloc, counted the same way from callgrind's call
counts). Needs callgrind_annotate.
"""

import collections
import re
import subprocess
import sys

# Areas, matched against "file:function" in this order (the first match wins).
AREAS = [
    ("memcpy, memmove, memset", r"memmove|memcpy|memset"),
    ("conduit-proxy's own stages (record, retry, forward, pool, balance, policy, tap)", r"\?\?\?:<?conduit"),
    ("TLS (rustls, ring)", r"rustls|ring::|ring_core|aes|gcm|chacha|sha2|poly1305|ghash"),
    ("allocation (malloc, free)", r"malloc|_int_free|free|realloc|alloc::|__rust_alloc|__rdl"),
    ("hashing (SipHash of map keys)", r"core::hash|hash_one|sip::"),
    ("HTTP/1 parse and encode (hyper, httparse, http, bytes)", r"hyper::|httparse|http::|bytes::"),
    ("tokio (scheduler, I/O readiness, timers)", r"tokio::|mio::"),
    ("system call wrappers (libc)", r"libc|sysdeps/unix|syscall|epoll|recv|send|writev|read"),
]
OTHER = "everything else"


def self_costs(path):
    """{"file:function": instructions} for every function of one callgrind output."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    costs = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*:.*)", line)
        if m:
            costs[m.group(2).split(" [")[0]] += int(m.group(1).replace(",", ""))
    return costs


ALLOCATORS = {"malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign"}


def allocations(path):
    """Calls to the C allocator's allocating functions in one callgrind output."""
    names = {}  # compressed id -> function name
    current = None
    total = 0
    for line in open(path, errors="replace"):
        m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
        if m:
            if m.group(2) is not None:
                names[m.group(1)] = m.group(2).strip()
            if line.startswith("cfn="):
                current = names.get(m.group(1), "")
            continue
        if line.startswith("calls=") and current is not None:
            if current.split(" ")[0] in ALLOCATORS:
                total += int(line.split("=", 1)[1].split()[0])
            current = None
    return total


def area(function):
    for name, pattern in AREAS:
        if re.search(pattern, function):
            return name
    return OTHER


def per_request(n, run_n, run_2n):
    a, b = self_costs(run_n), self_costs(run_2n)
    by_area = collections.Counter()
    for f in set(a) | set(b):
        by_area[area(f)] += (b[f] - a[f]) / n
    return by_area


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    n = int(argv[1])
    columns = []
    for arg in argv[2:]:
        label, runs = arg.split("=", 1)
        run_n, run_2n = runs.split(",")
        allocs = (allocations(run_2n) - allocations(run_n)) / n
        columns.append((label, per_request(n, run_n, run_2n), allocs))
    print("| instructions per request in | " + " | ".join(label for label, *_ in columns) + " |")
    print("| --- |" + " ---: |" * len(columns))
    for name in [name for name, _ in AREAS] + [OTHER]:
        print(f"| {name} | " + " | ".join(f"{c[name]:,.0f}" for _, c, _ in columns) + " |")
    print("| **total** | " + " | ".join(f"**{sum(c.values()):,.0f}**" for _, c, _ in columns) + " |")
    print("| allocations per request (malloc, calloc, realloc calls) | "
          + " | ".join(f"{a:,.1f}" for *_, a in columns) + " |")


if __name__ == "__main__":
    main(sys.argv)
