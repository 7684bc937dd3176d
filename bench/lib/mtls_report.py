#!/usr/bin/env python3
"""bench/mtls's report: mtls_report.py RAW_DIR OUT.md

Medians over rounds of each scenario, the mTLS hop against direct from the same run, and
the targets of the identity issue. Parsing is shared with bench/run's report.py.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import cpu_cell, cpu_per_request, fmt, med, parse_h2load, parse_wrk, percentile, read_meta, signed  # noqa: E402

P99_ADDED_US = 400
THROUGHPUT_RATIO = 0.3
NEW_CONN_ADDED_US = 2000
RSS_LIMIT_KB = 10 * 1024
# The proxies each scenario's requests pass through (names as in bench/mtls's cpu.tsv).
PROCESSES_OF = {"direct": [], "hop": ["hop-client", "hop-server"], "mtls": ["client", "server"],
                "mtls-h1": ["h1-client", "server"]}


def new_conns(path):
    vals = sorted(float(x) for x in open(path).read().split())
    return {"n": len(vals), "p50": percentile(vals, 50), "p99": percentile(vals, 99)}


def ratio_of(a, b):
    return a["rps"] / b["rps"] if a["rps"] and b["rps"] else None


def diff_of(a, b, key):
    return a[key] - b[key] if a[key] is not None and b[key] is not None else None


def main(raw, out_md):
    meta = read_meta(raw)
    rounds = int(meta["rounds"])
    rows = {}
    for s in ("direct", "hop", "mtls", "mtls-h1"):
        w = [parse_wrk(os.path.join(raw, f"{s}.r{i}.wrk.txt")) for i in range(1, rounds + 1)]
        h = [parse_h2load(os.path.join(raw, f"{s}.r{i}.h2load.txt"), os.path.join(raw, f"{s}.r{i}.h2load.log"))
             for i in range(1, rounds + 1)]
        c = [new_conns(os.path.join(raw, f"{s}.r{i}.newconn.txt")) for i in range(1, rounds + 1)]
        rows[s] = {
            "rps": med([x["rps"] for x in w]),
            "errors": sum(x["non2xx"] + x["socket_errors"] for x in w) + sum(x["bad"] + x["failed"] for x in h),
            "p50": med([x["p50"] for x in h]),
            "p99": med([x["p99"] for x in h]),
            "p999": med([x["p999"] for x in h]),
            "conn_p50": med([x["p50"] for x in c]),
            "conn_p99": med([x["p99"] for x in c]),
            "rounds_p99": [x["p99"] for x in h],
        }
    cpu = cpu_per_request(raw, meta, PROCESSES_OF, lambda s, tag: parse_wrk(os.path.join(raw, f"{s}.{tag}.wrk.txt")))

    d, h, m = rows["direct"], rows["hop"], rows["mtls"]
    ratio = m["rps"] / d["rps"] if d["rps"] and m["rps"] else None
    added_p99 = m["p99"] - d["p99"] if d["p99"] is not None and m["p99"] is not None else None
    added_conn = m["conn_p50"] - d["conn_p50"] if d["conn_p50"] is not None and m["conn_p50"] is not None else None
    rss = max(int(meta["rss_max_client"]), int(meta["rss_max_server"]))
    tls_p99 = m["p99"] - h["p99"] if h["p99"] is not None and m["p99"] is not None else None
    tls_ratio = m["rps"] / h["rps"] if h["rps"] and m["rps"] else None
    tls_conn = m["conn_p50"] - h["conn_p50"] if h["conn_p50"] is not None and m["conn_p50"] is not None else None

    def verdict(ok):
        return "met" if ok else "**missed**"

    lines = [
        f"# mTLS hop benchmark ({meta['date']})",
        "",
        f"Command: `sudo {meta['command']}` at commit {meta['commit']}"
        f"{' (' + meta['layout'] + ')' if meta.get('layout') else ''}; {meta['nproc']} cores "
        f"({meta['cpu']}), kernel {meta['kernel']}. Local runtime: pods are network namespaces on "
        "one bridge; the meshed pair's proxies hold certificates from the controller's identity "
        "service, and the hop is verified to be mTLS before measuring.",
        "",
        f"Medians of {rounds} interleaved rounds. Throughput: wrk, 1 thread, {meta['wrk_conns']} connections, "
        f"{meta['wrk_seconds']} s. Latency: h2load (HTTP/1.1), {meta['rps']} rps over {meta['lat_clients']} "
        f"connections for {meta['lat_seconds']} s. New connections: {meta['new_conns']} sequential TCP "
        "connections to an echo server, each connect + one round trip (opaque TCP is never pooled, so "
        "each meshed one is a new mTLS handshake between the proxies).",
        "",
        "| scenario | throughput (rps) | vs direct | proxy CPU us/request (client + server) | p50 (us) | p99 (us) | p99.9 (us) | new conn p50 (us) | new conn p99 (us) | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s, label in (("direct", "direct (plain pod to plain pod)"),
                     ("hop", "two proxies, plaintext (no identity)"),
                     ("mtls", "two proxies, mTLS (the mesh as it runs: HTTP/1 carried over HTTP/2)"),
                     ("mtls-h1", "two proxies, mTLS, HTTP/1 between them (`CONDUIT_PROXY_MESH_HTTP2=false`)")):
        r = rows[s]
        vs = f"{r['rps'] / d['rps']:.3f}x" if r["rps"] and d["rps"] else "n/a"
        lines.append(f"| {label} | {fmt(r['rps'])} | {vs} | {cpu_cell(cpu, PROCESSES_OF, s)} | {fmt(r['p50'])} | {fmt(r['p99'])} | {fmt(r['p999'])} | "
                     f"{fmt(r['conn_p50'])} | {fmt(r['conn_p99'])} | {r['errors']} |")
    lines += [
        "",
        "Proxy CPU: each proxy process's user + system time (`/proc/<pid>/stat`) over each wrk run, "
        "divided by the requests wrk completed, median over rounds, with the share of it in the kernel (sys).",
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
        f"| p99 added by the mTLS hop at {meta['rps']} rps <= {P99_ADDED_US} us | {signed(added_p99)} us "
        f"(per-round p99: direct {d['rounds_p99']}, mTLS {m['rounds_p99']}) | "
        f"{verdict(added_p99 is not None and added_p99 <= P99_ADDED_US)} |",
        f"| throughput >= {THROUGHPUT_RATIO}x direct | {fmt(ratio, 3)}x | "
        f"{verdict(ratio is not None and ratio >= THROUGHPUT_RATIO)} |",
        f"| a new mTLS connection costs < 2 ms | {signed(added_conn)} us added per new connection at the median "
        "(two proxies' accept, detection and connect, and the handshake) | "
        f"{verdict(added_conn is not None and added_conn < NEW_CONN_ADDED_US)} |",
        f"| a proxy with a certificate stays < 10 MB RSS | max {rss / 1024:.2f} MiB under load "
        f"(idle: client {int(meta['rss_idle_client']) / 1024:.2f} MiB, server {int(meta['rss_idle_server']) / 1024:.2f} MiB) | "
        f"{verdict(rss < RSS_LIMIT_KB)} |",
        "",
        f"What mTLS itself costs, against the plaintext two-proxy hop of the same run: p99 {signed(tls_p99)} us, "
        f"throughput {fmt(tls_ratio, 3)}x, a new connection {signed(tls_conn)} us at the median (the handshake).",
        "",
        f"HTTP/1 carried over HTTP/2 between the proxies, against HTTP/1 between them in the same run: "
        f"throughput {fmt(ratio_of(m, rows['mtls-h1']), 3)}x, p99 {signed(diff_of(m, rows['mtls-h1'], 'p99'))} us.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    with open(out_md, "w") as f:
        f.write(text)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
