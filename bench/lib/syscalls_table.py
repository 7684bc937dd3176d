#!/usr/bin/env python3
"""System calls per request, from `strace -f -c` summaries.

  syscalls_table.py N LABEL=RUN_N.out,RUN_2N.out ...

Each LABEL names two `strace -c` summaries of the same proxy setup, one that served N
requests and one that served 2N after the same warm-up (bench/callgrind's CG_TOOL=strace
runs): the difference of each call's count over N is what one request makes of it.
Prints a markdown table, one column per LABEL, the calls any LABEL makes at least 0.05
times per request, most frequent first.
"""

import sys


def counts(path):
    """{syscall: calls} of one summary."""
    calls = {}
    with open(path) as f:
        for line in f:
            fields = line.split()
            # "% time seconds usecs/call calls [errors] syscall"; rules and headers skipped.
            if len(fields) < 5 or not fields[3].isdigit() or fields[-1] == "total":
                continue
            calls[fields[-1]] = calls.get(fields[-1], 0) + int(fields[3])
    return calls


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    n = int(sys.argv[1])
    columns = []
    for arg in sys.argv[2:]:
        label, _, files = arg.partition("=")
        first, _, second = files.partition(",")
        if not second:
            sys.exit(f"syscalls_table.py: {arg!r}: want LABEL=RUN_N.out,RUN_2N.out")
        a, b = counts(first), counts(second)
        columns.append((label, {k: (b.get(k, 0) - a.get(k, 0)) / n for k in set(a) | set(b)}))
    names = sorted(
        {k for _, c in columns for k, v in c.items() if abs(v) >= 0.05},
        key=lambda k: -max(c.get(k, 0) for _, c in columns),
    )
    print("| system calls per request | " + " | ".join(label for label, _ in columns) + " |")
    print("| --- |" + " ---: |" * len(columns))
    for name in names:
        print(f"| `{name}` | " + " | ".join(f"{c.get(name, 0):.2f}" for _, c in columns) + " |")
    print("| **total** | " + " | ".join(f"**{sum(c.values()):.2f}**" for _, c in columns) + " |")


main()
