"""bench/dashboard's browser: keeps the dashboard's pages open in chromium and samples
the controller. Usage: dashboard_soak.py URL CONTROLLER_PID DURATION_S SAMPLE_S.
Prints a Markdown report: the controller's RSS, open files and threads per sample, the
API requests the pages made, and the verdict (growth from the first sample to the median
of the last quarter)."""

import os
import statistics
import sys
import time

from playwright.sync_api import sync_playwright

URL, PID, DURATION, SAMPLE = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
NS = "emojivoto"
PAGES = [f"/namespaces/{NS}", f"/namespaces/{NS}/deployments/web", f"/namespaces/{NS}/topology"]


def controller():
    status = open(f"/proc/{PID}/status").read()
    field = {line.split(":")[0]: line.split(":")[1].strip() for line in status.splitlines() if ":" in line}
    return {
        "rss_kib": int(field["VmRSS"].split()[0]),
        "fds": len(os.listdir(f"/proc/{PID}/fd")),
        "threads": int(field["Threads"]),
    }


with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    context = browser.new_context()
    requests = {"api": 0, "tap": 0, "failed": 0}
    first_load = []

    def counted(r):
        if "/api/v1/tap" in r.url:
            requests["tap"] += 1
        elif "/api/v1/" in r.url:
            requests["api"] += 1

    context.on("request", counted)
    context.on("requestfailed", lambda r: r.failure != "net::ERR_ABORTED" and requests.__setitem__("failed", requests["failed"] + 1))
    tabs = []
    for i, path in enumerate(PAGES):
        tab = context.new_page()
        if i == 0:
            tab.on("requestfinished", lambda r: first_load.append(r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"]))
        tab.goto(URL + path)
        tab.wait_for_load_state("networkidle")
        tabs.append(tab)
    first_load_bytes = sum(first_load)
    tap = context.new_page()
    tap.goto(f"{URL}/namespaces/{NS}/tap?resource=deploy/web")
    tap.locator("#tap-resource").wait_for()

    samples = []
    start = time.monotonic()
    next_sample = start
    next_tap = start
    while True:
        now = time.monotonic()
        if now >= next_tap:
            # A tap stopped and started again: each must end on the proxies.
            if tap.locator("#tap-stop").is_enabled():
                tap.locator("#tap-stop").click()
            tap.locator("#tap-start").click()
            next_tap += 60
        if now >= next_sample:
            samples.append({"t": now - start, **controller(), **requests})
            next_sample += SAMPLE
        if now - start >= DURATION:
            break
        # Let the pages' timers and streams run.
        tabs[0].wait_for_timeout(1000)
    browser.close()

rss = [s["rss_kib"] for s in samples]
tail = rss[-max(1, len(rss) // 4):]
print(f"# bench/dashboard: {len(PAGES)} pages and a tap open for {DURATION:.0f} s\n")
print(f"First load of {PAGES[0]}: {first_load_bytes} bytes ({first_load_bytes / 1024:.0f} KiB).\n")
print("| minute | controller RSS (MiB) | open files | threads | API requests so far | taps started |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
for s in samples:
    print(f"| {s['t'] / 60:.1f} | {s['rss_kib'] / 1024:.1f} | {s['fds']} | {s['threads']} | {s['api']} | {s['tap']} |")
growth = statistics.median(tail) - rss[0]
print(f"\nRSS first sample {rss[0] / 1024:.1f} MiB, median of the last quarter {statistics.median(tail) / 1024:.1f} MiB "
      f"(growth {growth / 1024:+.1f} MiB), max {max(rss) / 1024:.1f} MiB; {requests['api']} API requests, "
      f"{requests['tap']} taps, {requests['failed']} failed requests.")
