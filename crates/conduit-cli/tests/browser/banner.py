"""The dashboard's banner when the metrics' source fails, in a real browser (Debian's
chromium, driven by playwright). Run by tests/prometheus.rs while the runtime's
Prometheus is stopped:

    python3 banner.py URL SCREENSHOT_DIR EXPECTED

Opens the workloads page, waits until the banner says EXPECTED, prints `banner shown`,
then waits for a line on standard input (Prometheus answers again) and checks that the
banner goes and the table fills. Exits non-zero with what was wrong.
"""

import os
import sys

from playwright.sync_api import expect, sync_playwright

URL, SHOTS, EXPECTED = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(SHOTS, exist_ok=True)
expect.set_options(timeout=60_000)

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(f"{URL}/namespaces/emojivoto")
    banner = page.locator("#banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("The API answered 503")
    expect(banner).to_contain_text(EXPECTED)
    page.screenshot(path=os.path.join(SHOTS, "prometheus-stopped.png"), full_page=True)
    print("banner shown", flush=True)
    sys.stdin.readline()
    expect(banner).to_be_hidden()
    expect(page.locator('tr[data-key="web"]')).to_be_visible()
    page.screenshot(path=os.path.join(SHOTS, "prometheus-back.png"), full_page=True)
    browser.close()
print("the banner came and went", flush=True)
