#!/usr/bin/env python3
"""function_order.py BINARY STAGE_DIR...: the order for the linker to lay out BINARY's
functions in (crates/conduit-proxy/build.rs), from callgrind outputs (--demangle=no).

Each STAGE_DIR holds the callgrind outputs (*.out) of one scenario: the functions of the
first stage come first, then those the second adds, and so on. Within a stage, those the
next stage runs too come last, so that each stage's code is one stretch, and so is the
next's (with stages "idle meshed" and "bare", both a meshed proxy at rest and a bare
one have their code together); otherwise the most instructions first. Prints one
mangled symbol per line; only functions of the object whose file name is BINARY's.
"""
import collections
import glob
import os
import re
import sys

NAMED = re.compile(r"c?(ob|fn)=\((\d+)\)(?: (.*))?")


def self_costs(path, binary, costs):
    """Adds each function's own instructions (calls' inclusive costs left out) to costs."""
    names, objects = {}, {}
    in_binary, fn, skip = False, None, False
    with open(path, errors="replace") as f:
        for line in f:
            if skip:  # the line after calls= is the call's inclusive cost
                skip = False
                continue
            m = NAMED.match(line.rstrip("\n"))
            if m:
                kind, ident, name = m.groups()
                table = objects if kind == "ob" else names
                if name is not None:
                    table[ident] = name
                if line.startswith("ob="):
                    in_binary = os.path.basename(objects[ident]) == binary
                elif line.startswith("fn="):
                    # callgrind marks a recursive call's function name'2
                    fn = names[ident].split("'")[0] if in_binary else None
                    if fn:
                        costs[fn] += 0
                continue
            if line.startswith("calls="):
                skip = True
            elif fn and line[:1] in "0123456789+-*":
                fields = line.split()
                if len(fields) >= 2:
                    costs[fn] += int(fields[1])


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: function_order.py BINARY STAGE_DIR...")
    binary, stages = os.path.basename(sys.argv[1]), sys.argv[2:]
    runs = []
    for stage in stages:
        outputs = sorted(glob.glob(os.path.join(stage, "*.out")))
        if not outputs:
            sys.exit(f"function_order.py: no callgrind outputs (*.out) in {stage}")
        costs = collections.Counter()
        for path in outputs:
            self_costs(path, binary, costs)
        runs.append(costs)
    placed = set()
    for k, costs in enumerate(runs):
        following = runs[k + 1] if k + 1 < len(runs) else {}
        # Functions without a symbol show as addresses; the linker cannot place those.
        new = [n for n in costs if n not in placed and not n.startswith("0x")]
        for name in sorted(new, key=lambda n: (n in following, -costs[n], n)):
            print(name)
        placed.update(new)


if __name__ == "__main__":
    main()
