#!/usr/bin/env python3
"""Helpers for bench/run.

  report.py sample RAW_DIR NS1,NS2,.. NAME=PID...  until SIGTERM: max VmRSS per pid, and CPU used
                                                   by processes outside the namespaces (background)
  report.py report RAW_DIR OUT.md             parse wrk/h2load outputs, print a table, write markdown
"""

import json
import math
import os
import re
import signal
import statistics
import sys
import time

SCENARIOS = ["direct", "outbound", "inbound", "both", "haproxy", "haproxy-pod"]
DESCRIPTION = {
    "direct": "client -> backend",
    "outbound": "client pod meshed: client -> proxy(out) -> backend",
    "inbound": "server pod meshed: client -> proxy(in) -> backend",
    "both": "both pods meshed: client -> proxy(out) -> proxy(in) -> backend",
    "haproxy": "reference: client -> haproxy (1 thread, http mode) -> backend",
    "haproxy-pod": "reference in the proxy's place: client pod with the proxy's redirect rules -> haproxy (as the proxy's user, on its outbound port) -> backend",
}

# Targets from the issue; each measured against direct in the same run.
P99_ADDED_ONE_PROXY_US = 150
P99_ADDED_TWO_PROXIES_US = 300
THROUGHPUT_RATIO_ONE_PROXY = 0.35
RSS_LOAD_LIMIT_KB = 10 * 1024
RSS_IDLE_LIMIT_KB = 5 * 1024


# ---------------------------------------------------------------------------- RSS sampling
def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _netns_inodes(names):
    out = set()
    for n in names:
        try:
            out.add(os.stat(f"/run/netns/{n}").st_ino)
        except OSError:
            pass
    return out


def _foreign_cpu_ticks(ours, self_pid):
    """CPU ticks (utime+stime) per pid of user processes outside the bench's namespaces."""
    ticks = {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == self_pid:
            continue
        try:
            if os.stat(f"/proc/{d}/ns/net").st_ino in ours:
                continue
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[6]) & 0x00200000:  # PF_KTHREAD: kernel threads may be doing our network work
            continue
        ticks[d] = int(fields[11]) + int(fields[12])
    return ticks


def sample(raw, netns_csv, pairs):
    """Until SIGTERM: max VmRSS per named pid (every 100 ms), and every 500 ms the CPU used by
    processes outside the bench's namespaces (other work on the machine), in cores."""
    pids = dict(p.split("=", 1) for p in pairs)
    peak = {name: 0 for name in pids}
    samples = {name: 0 for name in pids}
    ours = _netns_inodes(netns_csv.split(","))
    hz = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    prev, prev_t = _foreign_cpu_ticks(ours, me), time.time()
    timeline = []
    i = 0
    while not stop:
        for name, pid in pids.items():
            v = rss_kb(pid)
            if v is not None:
                peak[name] = max(peak[name], v)
                samples[name] += 1
        i += 1
        if i % 5 == 0:
            cur, t = _foreign_cpu_ticks(ours, me), time.time()
            used = sum(v - prev.get(k, 0) for k, v in cur.items() if v >= prev.get(k, 0))
            timeline.append((t, used / hz / (t - prev_t)))
            prev, prev_t = cur, t
        time.sleep(0.1)
    with open(os.path.join(raw, "rss-load.json"), "w") as f:
        json.dump({"max_kb": peak, "samples": samples}, f)
    with open(os.path.join(raw, "cpu-background.tsv"), "w") as f:
        for t, cores in timeline:
            f.write(f"{t:.3f}\t{cores:.3f}\n")


def background_by_run(raw):
    """{(scenario, tag, kind): mean cores used by other processes during that run}."""
    tl_path, runs_path = os.path.join(raw, "cpu-background.tsv"), os.path.join(raw, "runs.tsv")
    if not (os.path.exists(tl_path) and os.path.exists(runs_path)):
        return {}
    tl = [tuple(map(float, l.split())) for l in open(tl_path) if l.strip()]
    out = {}
    for line in open(runs_path):
        parts = line.split()
        if len(parts) != 5:
            continue
        s, tag, kind, t0, t1 = parts[0], parts[1], parts[2], float(parts[3]), float(parts[4])
        vals = [c for t, c in tl if t0 + 0.5 <= t <= t1]
        out[(s, tag, kind)] = statistics.mean(vals) if vals else None
    return out


# ---------------------------------------------------------------------------- parsing
def parse_wrk(path):
    text = open(path).read()
    r = {"rps": None, "requests": 0, "non2xx": 0, "socket_errors": 0, "raw_errors": ""}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", text)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        r["socket_errors"] = sum(int(x) for x in m.groups())
        r["raw_errors"] = m.group(0)
    return r


def percentile(sorted_vals, q):
    """Nearest-rank percentile."""
    if not sorted_vals:
        return None
    k = max(1, math.ceil(q / 100.0 * len(sorted_vals)))
    return sorted_vals[k - 1]


def parse_h2load(txt_path, log_path):
    text = open(txt_path).read() if os.path.exists(txt_path) else ""
    r = {"p50": None, "p99": None, "p999": None, "max": None, "n": 0, "bad": 0, "achieved_rps": None,
         "failed": 0, "errored": 0, "timeout": 0, "non2xx": 0}
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    if m:
        r["failed"], r["errored"], r["timeout"] = int(m.group(5)), int(m.group(6)), int(m.group(7))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        r["non2xx"] = int(m.group(2)) + int(m.group(3)) + int(m.group(4))
    m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", text)
    if m:
        r["achieved_rps"] = float(m.group(1))
    durations = []
    if os.path.exists(log_path):
        with open(log_path) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) < 3:
                    continue
                status, us = int(parts[1]), int(parts[2])
                if status == 200:
                    durations.append(us)
                else:
                    r["bad"] += 1
    durations.sort()
    r["n"] = len(durations)
    if durations:
        r["p50"] = percentile(durations, 50)
        r["p99"] = percentile(durations, 99)
        r["p999"] = percentile(durations, 99.9)
        r["max"] = durations[-1]
    return r


def read_meta(raw):
    meta = {}
    with open(os.path.join(raw, "meta.env")) as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" in line:
                k, v = line.split("=", 1)
                meta[k] = v
    return meta


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def metric_sums(path):
    """Sum counters by (name, selected labels) from a Prometheus text file."""
    out = {"response_by_status": {}, "proxy_errors": {}, "failure_responses": 0}
    if not os.path.exists(path):
        return out
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"([a-zA-Z_:]+)(\{(.*)\})?\s+([\d.eE+-]+)", line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(3) or "", float(m.group(4))
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if name == "response_total":
            key = f'{lab.get("direction", "?")} {lab.get("status_code", "?")}'
            out["response_by_status"][key] = out["response_by_status"].get(key, 0) + int(value)
            if lab.get("classification") == "failure":
                out["failure_responses"] += int(value)
        elif name == "proxy_errors_total":
            key = ",".join(f"{k}={v}" for k, v in lab.items() if k not in ("namespace", "deployment", "pod"))
            out["proxy_errors"][key] = out["proxy_errors"].get(key, 0) + int(value)
    return out


# Which proxy processes carry each scenario's requests (names as in bench/run's cpu.tsv).
PROCESSES_OF = {"direct": [], "outbound": ["clim"], "inbound": ["srvm"], "both": ["clim", "srvm"],
                "haproxy": ["haproxy"], "haproxy-pod": ["haproxy_pod"]}


def cpu_per_request(raw, meta, processes_of, wrk_of):
    """{(scenario, process): (µs, system share)}: the median over the measured wrk runs of
    that process's CPU time (user + system, from /proc/<pid>/stat) per request, and the
    median share of it spent in the kernel. RAW/cpu.tsv has a line `scenario tag process
    user_before system_before user_after system_after` (clock ticks) per process and wrk
    run; `processes_of[scenario]` names the processes its requests pass through, and
    `wrk_of(scenario, tag)` is that run's parsed wrk output."""
    path = os.path.join(raw, "cpu.tsv")
    if not os.path.exists(path):
        return {}
    hz = int(meta.get("clock_ticks", "100"))
    per = {}
    for line in open(path):
        parts = line.split()
        if len(parts) != 7 or parts[1] == "warmup":
            continue
        s, tag, proc = parts[:3]
        u0, s0, u1, s1 = (int(x) for x in parts[3:])
        if proc not in processes_of.get(s, []):
            continue
        requests = wrk_of(s, tag)["requests"]
        used = (u1 - u0) + (s1 - s0)
        if requests and used:
            per.setdefault((s, proc), []).append((used / hz * 1e6 / requests, (s1 - s0) / used))
    return {k: (statistics.median(x for x, _ in v), statistics.median(y for _, y in v)) for k, v in per.items()}


def cpu_cell(cpu, processes_of, scenario):
    """A scenario's cell: for each of its processes µs per request and the kernel's share
    of it, joined by +; "—" for a scenario through no proxy."""
    def one(key):
        if key not in cpu:
            return "n/a"
        us, system = cpu[key]
        return f"{us:,.1f} ({system:.0%} sys)"
    return " + ".join(one((scenario, p)) for p in processes_of[scenario]) or "—"


# ---------------------------------------------------------------------------- report
def fmt(v, nd=0):
    if v is None:
        return "n/a"
    return f"{v:,.{nd}f}"


def signed(v):
    return "n/a" if v is None else f"{v:+,.0f}"


def mb(kb):
    return "n/a" if kb in (None, "", 0) else f"{int(kb) / 1024:.2f} MiB"


def mbk(kb):
    return "n/a" if kb in (None, "", 0) else f"{int(kb) / 1024:.2f} MiB ({int(kb):,} kB)"


def report(raw, out_md):
    meta = read_meta(raw)
    rounds = int(meta["rounds"])
    rows = {}
    per_round = {}
    for s in SCENARIOS:
        w = [parse_wrk(os.path.join(raw, f"{s}.r{i}.wrk.txt")) for i in range(1, rounds + 1)]
        h = [parse_h2load(os.path.join(raw, f"{s}.r{i}.h2load.txt"), os.path.join(raw, f"{s}.r{i}.h2load.log"))
             for i in range(1, rounds + 1)]
        warm = os.path.join(raw, f"{s}.warmup.wrk.txt")
        wu = parse_wrk(warm) if os.path.exists(warm) else None
        per_round[s] = (w, h)
        rows[s] = {
            "rps": med([x["rps"] for x in w]),
            "p50": med([x["p50"] for x in h]),
            "p99": med([x["p99"] for x in h]),
            "p999": med([x["p999"] for x in h]),
            "achieved": med([x["achieved_rps"] for x in h]),
            "wrk_non2xx": sum(x["non2xx"] for x in w) + (wu["non2xx"] if wu else 0),
            "wrk_sock": sum(x["socket_errors"] for x in w) + (wu["socket_errors"] if wu else 0),
            "h2_bad": sum(x["bad"] + x["failed"] + x["errored"] + x["timeout"] + x["non2xx"] for x in h),
            "wrk_requests": sum(x["requests"] for x in w),
            "h2_n": sum(x["n"] for x in h),
        }
    d = rows["direct"]
    for s in SCENARIOS:
        r = rows[s]
        r["ratio"] = (r["rps"] / d["rps"]) if r["rps"] and d["rps"] else None
        r["add50"] = (r["p50"] - d["p50"]) if r["p50"] is not None and d["p50"] is not None else None
        r["add99"] = (r["p99"] - d["p99"]) if r["p99"] is not None and d["p99"] is not None else None
        r["add999"] = (r["p999"] - d["p999"]) if r["p999"] is not None and d["p999"] is not None else None

    cpu = cpu_per_request(raw, meta, PROCESSES_OF, lambda s, tag: parse_wrk(os.path.join(raw, f"{s}.{tag}.wrk.txt")))

    bg = background_by_run(raw)
    bg_measured = [v for (sc, tag, kind), v in bg.items() if tag != "warmup" and v is not None]
    bg_med = statistics.median(bg_measured) if bg_measured else None
    bg_max = max(bg_measured) if bg_measured else None

    rss_load = {}
    p = os.path.join(raw, "rss-load.json")
    if os.path.exists(p):
        rss_load = json.load(open(p)).get("max_kb", {})

    L = []
    L.append(f"### Run of {meta['date']}")
    L.append("")
    L.append(f"Command: `{meta['command']}` (as root, from the repository root)  ")
    L.append(f"Machine: {meta['nproc']} CPUs ({meta['cpu']}), Linux {meta['kernel']}, {meta['os']}  ")
    layout = f", {meta['layout']}" if meta.get("layout") else ""
    L.append(f"Proxy: conduit-proxy at {meta['commit']}, release build{layout}, `CONDUIT_PROXY_CORES={meta['proxy_cores']}`  ")
    L.append(f"Tools: wrk {meta['wrk']}, {meta['h2load']}, HAProxy {meta['haproxy']}, nginx {meta['nginx']} (backend, 1 worker)  ")
    L.append(f"Method: {rounds} rounds, scenario order rotated each round, medians shown. "
             f"Throughput: `wrk -t1 -c{meta['wrk_conns']} -d{meta['wrk_seconds']}s`. "
             f"Latency: `h2load --h1 -t1 -c{meta['lat_clients']} --rps={int(meta['rps']) // int(meta['lat_clients'])} "
             f"-D {meta['lat_seconds']} --warm-up-time=1` = {meta['rps']} rps total, percentiles computed from "
             f"h2load's per-request log (nearest rank).  ")
    if bg_med is not None:
        noisy = bg_max is not None and bg_max > 0.10
        L.append(f"Background: processes outside the bench used a median {bg_med:.2f} and at most {bg_max:.2f} "
                 f"of the {meta['nproc']} CPUs during the measured runs"
                 + (" — **the machine was not quiet; treat the numbers as noisy** (per-run figures below)." if noisy else
                    " (quiet machine)."))
    L.append("")
    L.append("| scenario | path | wrk req/s | vs direct | proxy CPU µs/request | p50 µs | p99 µs | p99.9 µs | added p50 µs | added p99 µs | added p99.9 µs | errors |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for s in SCENARIOS:
        r = rows[s]
        errs = []
        if r["wrk_non2xx"]:
            errs.append(f"wrk non-2xx {r['wrk_non2xx']}")
        if r["wrk_sock"]:
            errs.append(f"wrk socket errors {r['wrk_sock']}")
        if r["h2_bad"]:
            errs.append(f"h2load failed/non-2xx {r['h2_bad']}")
        ratio = "1.00x" if s == "direct" else (f"{r['ratio']:.2f}x" if r["ratio"] else "n/a")
        is_direct = s == "direct"
        L.append(f"| {s} | {DESCRIPTION[s]} | {fmt(r['rps'])} | {ratio} | {cpu_cell(cpu, PROCESSES_OF, s)} | {fmt(r['p50'])} | {fmt(r['p99'])} | "
                 f"{fmt(r['p999'])} | {'—' if is_direct else signed(r['add50'])} | {'—' if is_direct else signed(r['add99'])} | "
                 f"{'—' if is_direct else signed(r['add999'])} | {'; '.join(errs) or 'none'} |")
    L.append("")
    L.append("Proxy CPU µs/request: the proxy process's user + system time (`/proc/<pid>/stat`) over each "
             "wrk run, divided by the requests wrk completed, median over rounds, with the share of it in the kernel (sys); `both` shows the client "
             "pod's proxy + the server pod's.")
    L.append("")

    L.append("Proxy memory (VmRSS of the process; haproxy for reference):")
    L.append("")
    L.append("| process | idle, after start | max under load (sampled every 100 ms) | idle, 2 s after load |")
    L.append("| --- | ---: | ---: | ---: |")
    for key, label in (("clim", "conduit-proxy, client pod (outbound)"),
                       ("srvm", "conduit-proxy, server pod (inbound)"),
                       ("haproxy", "haproxy (reference)"),
                       ("haproxy_pod", "haproxy behind the redirect rules (reference)")):
        L.append(f"| {label} | {mbk(meta.get('rss_idle_' + key))} | {mbk(rss_load.get(key))} | {mbk(meta.get('rss_after_' + key))} |")
    L.append("")

    # Targets.
    t = []

    def target(name, measured, ok):
        t.append(f"| {name} | {measured} | {'met' if ok else '**missed**'} |")

    for s in ("outbound", "inbound"):
        a = rows[s]["add99"]
        target(f"one proxy ({s}) adds ≤ {P99_ADDED_ONE_PROXY_US} µs at p99, {meta['rps']} rps",
               f"{signed(a)} µs", a is not None and a <= P99_ADDED_ONE_PROXY_US)
    a = rows["both"]["add99"]
    target(f"two-proxy hop adds ≤ {P99_ADDED_TWO_PROXIES_US} µs at p99, {meta['rps']} rps",
           f"{signed(a)} µs", a is not None and a <= P99_ADDED_TWO_PROXIES_US)
    for s in ("outbound", "inbound"):
        x = rows[s]["ratio"]
        target(f"throughput through one proxy ({s}) ≥ {THROUGHPUT_RATIO_ONE_PROXY}x direct",
               "n/a" if x is None else f"{x:.3f}x", x is not None and x >= THROUGHPUT_RATIO_ONE_PROXY)
    for key, label in (("clim", "client pod"), ("srvm", "server pod")):
        v = rss_load.get(key)
        target(f"proxy RSS under load < 10 MiB ({label})", mbk(v), bool(v) and v < RSS_LOAD_LIMIT_KB)
    for key, label in (("clim", "client pod"), ("srvm", "server pod")):
        v = meta.get("rss_idle_" + key)
        v = int(v) if v else None
        target(f"proxy RSS idle < 5 MiB ({label})", mbk(v), bool(v) and v < RSS_IDLE_LIMIT_KB)
    L.append("Targets (each against direct in this run):")
    L.append("")
    L.append("| target | measured | result |")
    L.append("| --- | ---: | --- |")
    L.extend(t)
    L.append("")

    # Errors and sanity.
    L.append("Errors and checks:")
    L.append("")
    total_bad = 0
    for s in SCENARIOS:
        r = rows[s]
        bad = r["wrk_non2xx"] + r["wrk_sock"] + r["h2_bad"]
        total_bad += bad
        ach = r["achieved"]
        L.append(f"- {s}: {r['wrk_requests']:,} wrk requests, {r['h2_n']:,} timed h2load requests "
                 f"(achieved {fmt(ach)} req/s of {meta['rps']}), "
                 f"{'no errors' if bad == 0 else f'{bad:,} errors (see raw outputs)'}")
    L.append(f"- requests counted by the proxies during the measured rounds: client pod "
             f"{int(meta['proxied_requests_clim']):,}, server pod {int(meta['proxied_requests_srvm']):,}")
    for key, label in (("clim", "client pod"), ("srvm", "server pod")):
        ms = metric_sums(os.path.join(raw, f"metrics-{key}.txt"))
        by = ", ".join(f"{k}: {v:,}" for k, v in sorted(ms["response_by_status"].items())) or "none"
        errs = ", ".join(f"{k}: {v:,}" for k, v in sorted(ms["proxy_errors"].items())) or "none"
        L.append(f"- proxy metrics, {label}: responses by direction and status {by}; proxy_errors {errs}")
    crashes = os.path.join(raw, "crashes.txt")
    L.append(f"- proxy processes: {'CRASHED: ' + open(crashes).read().strip() if os.path.exists(crashes) else 'alive throughout'}")
    for key in ("clim", "srvm"):
        lp = os.path.join(raw, f"proxy-{key}.log")
        n = sum(1 for _ in open(lp)) if os.path.exists(lp) else 0
        L.append(f"- proxy log ({key}, CONDUIT_PROXY_LOG=warn): {n} lines")
    L.append("")

    L.append("<details><summary>Per round</summary>")
    L.append("")
    L.append("Latency in µs; bg = CPUs used by processes outside the bench during that wrk / h2load run.")
    L.append("")
    L.append("| round | scenario | wrk req/s | bg | p50 | p99 | p99.9 | bg |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")

    def bgf(v):
        return "n/a" if v is None else f"{v:.2f}"

    for i in range(rounds):
        for s in SCENARIOS:
            w, h = per_round[s]
            L.append(f"| {i + 1} | {s} | {fmt(w[i]['rps'])} | {bgf(bg.get((s, f'r{i + 1}', 'wrk')))} | "
                     f"{fmt(h[i]['p50'])} | {fmt(h[i]['p99'])} | {fmt(h[i]['p999'])} | "
                     f"{bgf(bg.get((s, f'r{i + 1}', 'h2load')))} |")
    L.append("")
    L.append("</details>")
    L.append("")

    md = "\n".join(L)
    with open(out_md, "w") as f:
        f.write(md)

    # Console table.
    print()
    print(f"conduit-proxy bench  {meta['date']}  command: {meta['command']}  "
          f"machine: nproc={meta['nproc']} kernel={meta['kernel']}  commit {meta['commit']}")
    print(f"{rounds} rounds, medians; wrk -t1 -c{meta['wrk_conns']} -d{meta['wrk_seconds']}s; "
          f"h2load --h1 -c{meta['lat_clients']} {meta['rps']} rps total, {meta['lat_seconds']}s")
    hdr = f"{'scenario':<11} {'req/s':>9} {'vs direct':>9} {'cpu us/req':>12} {'p50us':>7} {'p99us':>7} {'p99.9us':>8} {'+p99us':>7} {'+p99.9us':>8} {'errors':>7}"
    print(hdr)
    print("-" * len(hdr))
    for s in SCENARIOS:
        r = rows[s]
        bad = r["wrk_non2xx"] + r["wrk_sock"] + r["h2_bad"]
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "n/a"
        print(f"{s:<11} {fmt(r['rps']):>9} {ratio:>9} {cpu_cell(cpu, PROCESSES_OF, s):>12} {fmt(r['p50']):>7} {fmt(r['p99']):>7} {fmt(r['p999']):>8} "
              f"{('-' if s == 'direct' else signed(r['add99'])):>7} {('-' if s == 'direct' else signed(r['add999'])):>8} {bad:>7}")
    print()
    if bg_med is not None:
        print(f"background CPU (other processes) during measured runs: median {bg_med:.2f}, max {bg_max:.2f} of "
              f"{meta['nproc']} CPUs{'  <- NOT QUIET, numbers are noisy' if bg_max > 0.10 else ''}")
    print(f"RSS client-pod proxy: idle {mb(meta.get('rss_idle_clim'))}, load max {mb(rss_load.get('clim'))}, "
          f"after {mb(meta.get('rss_after_clim'))}")
    print(f"RSS server-pod proxy: idle {mb(meta.get('rss_idle_srvm'))}, load max {mb(rss_load.get('srvm'))}, "
          f"after {mb(meta.get('rss_after_srvm'))}")
    print(f"RSS haproxy:          idle {mb(meta.get('rss_idle_haproxy'))}, load max {mb(rss_load.get('haproxy'))}")
    print()
    for line in t:
        cells = [c.strip() for c in line.strip("|").split("|")]
        print(f"  {cells[2].replace('*', ''):<7} {cells[0]}: {cells[1]}")
    print()
    if total_bad:
        print(f"WARNING: {total_bad} failed or non-2xx requests; see the errors section of {out_md}")


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "sample":
        sample(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) == 4 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
