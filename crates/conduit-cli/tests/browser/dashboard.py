"""The dashboard's pages in a real browser (Debian's chromium, driven by playwright),
against the meshed sample app: what each page shows agrees with the CLI and the API,
the pages work by keyboard and in a narrow window, nothing logs an error, and the first
load is small. Run by tests/dashboard.rs:

    python3 dashboard.py URL SCREENSHOT_DIR CONDUIT

with CONDUIT_LOCAL_DIR naming the runtime. Screenshots of every page go to
SCREENSHOT_DIR for people to look at. Exits non-zero with what was wrong.
"""

import json
import os
import re
import subprocess
import sys
import time

from playwright.sync_api import expect, sync_playwright

URL, SHOTS, CONDUIT = sys.argv[1], sys.argv[2], sys.argv[3]
NS = "emojivoto"
SERVING = ["web", "emoji", "voting"]
# The first load (the page, its scripts and styles, the icon and the first answers).
MAX_FIRST_LOAD_BYTES = 300 * 1024

os.makedirs(SHOTS, exist_ok=True)
expect.set_options(timeout=60_000)


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check(ok, message):
    if not ok:
        fail(message)


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def stat_json():
    out = subprocess.run(
        [CONDUIT, "stat", "deploy", "-n", NS, "-o", "json"],
        capture_output=True, text=True, check=True,
    )
    return {r["name"]: r for r in json.loads(out.stdout)}


def number(text):
    """A cell's number: '96.67%' -> 96.67, '4.0rps' -> 4.0, '-' -> None."""
    m = re.match(r"^-?[0-9.]+", text.strip())
    return float(m.group(0)) if m else None


def cell(page, key, col):
    return page.locator(f'tr[data-key="{key}"] td[data-col="{col}"]').first.inner_text()


with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))
    # Requests the page aborts itself (leaving a page, stopping a tap) are not failures.
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}") if r.failure != "net::ERR_ABORTED" else None)
    loaded = []
    page.on("requestfinished", lambda r: loaded.append(r))

    # The namespaces overview, and what its first load costs.
    page.goto(URL + "/")
    expect(page.locator(f'tr[data-key="{NS}"] td[data-col="meshed"]')).to_have_text("4/4")
    page.wait_for_load_state("networkidle")
    first_load = sum(r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"] for r in loaded)
    print(f"first load: {len(loaded)} requests, {first_load} bytes")
    check(first_load < MAX_FIRST_LOAD_BYTES, f"the first load transferred {first_load} bytes")
    check(page.title() == "Namespaces · Conduit", page.title())
    shot(page, "namespaces")

    # By keyboard: from the top of the page to the namespace's link, and along it.
    page.goto(URL + "/")
    expect(page.locator(f'tr[data-key="{NS}"]')).to_be_visible()
    for _ in range(30):
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.textContent")
        if focused == NS:
            break
    else:
        fail(f"Tab never reached the {NS} link")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{URL}/namespaces/{NS}")

    # The workloads table: every serving deployment with traffic, agreeing with
    # `conduit stat -o json`.
    for name in SERVING:
        expect(page.locator(f'tr[data-key="{name}"] td[data-col="rps"]')).to_have_text(re.compile(r"^(?!0\.0)[0-9.]+rps$"), timeout=120_000)
    # The page is read between two `conduit stat` reads: with about one request a second,
    # a window's success rate moves by several points from one request to the next, so
    # the page must agree with what the CLI said just before or just after it.
    before = stat_json()
    shown = {name: (number(cell(page, name, "rps")), number(cell(page, name, "success"))) for name in SERVING}
    after = stat_json()
    for name in SERVING:
        rps, success = shown[name]
        rates = [cli[name]["request_rate"] for cli in (before, after)]
        successes = [cli[name]["success_rate"] * 100 for cli in (before, after)]
        check(min(abs(rps - r) - max(0.5, 0.2 * r) for r in rates) <= 0,
              f"{name}: the page says {rps} rps, conduit stat {rates[0]} then {rates[1]}")
        check(min(successes) - 5 <= success <= max(successes) + 5,
              f"{name}: the page says {success}% success, conduit stat {successes[0]}% then {successes[1]}%")
        check(cell(page, name, "meshed") == "1/1", f"{name} meshed: {cell(page, name, 'meshed')}")
    # Sorting: RPS, busiest first; again, quietest first; by name with the keyboard.
    rows = page.locator("tbody tr")

    def column(col):
        return [number(t) for t in page.locator(f'tbody td[data-col="{col}"]').all_inner_texts()]

    page.locator('button[data-col="rps"]').click()
    expect(page.locator('th:has(button[data-col="rps"])')).to_have_attribute("aria-sort", "descending")
    seen = [v for v in column("rps") if v is not None]
    check(seen == sorted(seen, reverse=True), f"RPS descending: {seen}")
    page.locator('button[data-col="rps"]').click()
    seen = [v for v in column("rps") if v is not None]
    check(seen == sorted(seen), f"RPS ascending: {seen}")
    page.locator('button[data-col="name"]').focus()
    page.keyboard.press("Enter")
    names = [rows.nth(i).get_attribute("data-key") for i in range(rows.count())]
    check(names == sorted(names), f"names ascending: {names}")
    # Live: the table refreshes itself.
    stamp = page.locator("#live").inner_text()
    expect(page.locator("#live")).not_to_have_text(stamp, timeout=15_000)
    shot(page, "workloads")

    # A deployment's page: charts with points, its pods, its edges with identities.
    page.locator('tr[data-key="web"] a').click()
    expect(page).to_have_url(f"{URL}/namespaces/{NS}/deployments/web")
    for chart in ["success", "rps", "latency"]:
        expect(page.locator(f'[data-chart="{chart}"] circle').first).to_be_attached()
    rps_points = int(page.locator('[data-chart="rps"] g.line').get_attribute("data-points"))
    check(rps_points >= 2, f"the request-rate chart has {rps_points} points")
    check(page.locator('[data-chart="latency"] g.line').count() == 3, "p50, p95 and p99 lines")
    pods = page.locator("table:has(caption:text-is('Pods')) tbody tr")
    expect(pods).to_have_count(1)
    check(pods.first.get_attribute("data-key").startswith("web-"), "web's pod")
    inbound = page.locator("table:has(caption:text-matches('^Inbound')) tr[data-key='emojivoto/vote-bot']")
    expect(inbound.locator('td[data-col="identity"]')).to_contain_text("vote-bot.emojivoto.serviceaccount.identity.")
    expect(inbound.locator('td[data-col="secured"]')).to_have_text("mTLS")
    for callee in ["emoji", "voting"]:
        out = page.locator(f"table:has(caption:text-matches('^Outbound')) tr[data-key='emojivoto/{callee}']")
        expect(out.locator('td[data-col="identity"]')).to_contain_text(f"{callee}.emojivoto.serviceaccount.identity.")
        expect(out.locator('td[data-col="secured"]')).to_have_text("mTLS")
    shot(page, "deployment")

    # Narrow: the page itself does not scroll sideways (wide tables scroll in their box).
    page.set_viewport_size({"width": 380, "height": 800})
    time.sleep(0.5)
    width = page.evaluate("document.documentElement.scrollWidth")
    check(width <= 380, f"at 380px the page is {width}px wide")
    shot(page, "deployment-narrow")
    page.set_viewport_size({"width": 1280, "height": 900})

    # The topology: the vote bot calls web, web calls emoji and voting, over mTLS.
    page.goto(f"{URL}/namespaces/{NS}/topology")
    for src, dst in [("vote-bot", "web"), ("web", "emoji"), ("web", "voting")]:
        edge = page.locator(f'g.edge[data-src="{src}"][data-dst="{dst}"]')
        expect(edge).to_have_class(re.compile(r"\bsecure\b"))
        expect(edge.locator("text")).to_have_text(re.compile(r"^[0-9.]+rps · [0-9.]+%$"))
    shot(page, "topology")
    page.locator('a.node[data-node="emoji"]').click()
    expect(page).to_have_url(f"{URL}/namespaces/{NS}/deployments/emoji")

    # Tap: web's GETs live; stopped, no more come.
    page.goto(f"{URL}/namespaces/{NS}/tap?resource=deploy/web&method=GET")
    expect(page.locator("#tap-resource")).to_have_value("web")
    expect(page.locator("#tap-method")).to_have_value("GET")
    page.locator("#tap-start").click()
    tapped = page.locator("#tap-requests tbody tr")
    expect(tapped.first).to_be_attached(timeout=30_000)
    expect(page.locator("#tap-requests tbody")).to_have_attribute("data-count", re.compile(r"^([3-9]|[1-9][0-9]+)$"))
    methods = set(page.locator("#tap-requests tbody td:nth-child(5)").all_inner_texts())
    check(methods == {"GET"}, f"the method filter shows only GETs: {methods}")
    statuses = [s for s in page.locator("#tap-requests tbody tr").evaluate_all("rs => rs.map(r => r.dataset.status)") if s]
    check(statuses, "responses fill in their status")
    shot(page, "tap")
    page.locator("#tap-stop").click()
    expect(page.locator("#tap-state")).to_have_text("Stopped.")
    expect(page.locator("#tap-start")).to_be_enabled()
    count = page.locator("#tap-requests tbody").get_attribute("data-count")
    time.sleep(3)
    check(page.locator("#tap-requests tbody").get_attribute("data-count") == count, "no requests after Stop")
    check("tap" in page.url and "method=GET" in page.url, f"the URL keeps the filters: {page.url}")

    check(not problems, "the pages logged:\n  " + "\n  ".join(problems))

    # A namespace that does not exist: the API's words in the banner (the browser logs
    # the 404 it was answered, as it should).
    page.goto(f"{URL}/namespaces/nope")
    expect(page.locator("#banner")).to_contain_text('namespace "nope": no such namespace')
    shot(page, "missing-namespace")
    browser.close()
print("the dashboard's pages passed")
