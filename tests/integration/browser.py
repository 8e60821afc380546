"""Headless Chromium on the Prefect UI, for the real-browser checks (issue #20).

Debian's chromium driven through Playwright's Python API: Playwright's own browser download
is not reachable here, so `executable_path` points at the system binary. What an operator
sees is read from the rendered DOM, not from the API, because the question is what the UI
shows: the runs list row, and the run page's first screen (1280x800, above the fold).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

CHROMIUM = Path("/usr/bin/chromium")  # tools/install-system-deps.sh installs it
VIEWPORT = {"width": 1280, "height": 800}
# Without the background-networking flags Chromium's own connections (updates, sync, Google
# lookups) are refused by this machine's closed network, many at a time.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The UI is a single-page app that keeps polling: "networkidle" never comes, so pages are
# ready when what they render is there. The machine is loaded: generous.
TIMEOUT_MS = 60_000
MESSAGE_TIMEOUT_MS = 30_000  # a toast answers a click; it also fades after a while

# Text of the elements whose box starts inside the viewport and that are visible: what the
# first screen shows, without scrolling. Leaf-ish text only (own text nodes), so a container
# that starts above the fold does not bring in the text of children below it.
_FIRST_SCREEN_JS = """
() => {
  const height = window.innerHeight;
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.trim();
    if (!text) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    const box = range.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    const style = window.getComputedStyle(node.parentElement);
    if (style.visibility === 'hidden' || style.display === 'none') continue;
    if (box.top >= 0 && box.top < height) out.push(text);
  }
  return out.join('\\n');
}
"""

# A list row is about 75 px tall (two lines, more with wrapped tags): the tallest ancestor
# of the run's name that stays under 160 px is its row, whatever Prefect's class names.
_ROW_JS = """
(node) => {
  let row = node;
  for (let up = node.parentElement; up; up = up.parentElement) {
    if (up.getBoundingClientRect().height >= 160) break;
    row = up;
  }
  return row.innerText;
}
"""


@dataclass
class PrefectUI:
    """One logged-in page on a Prefect server's UI."""

    page: Page
    base_url: str  # the server's root, where it serves the UI (no /api)
    auth: str | None  # the whole `user:password` basic-auth string, as the login box takes
    logged_in: bool = False  # the UI showed its login box and took `auth`

    def open(self, path: str, ready: str) -> None:
        """Go to `path` and wait until text matching the CSS/text selector `ready` shows."""
        self.page.goto(self.base_url + path, wait_until="domcontentloaded", timeout=TIMEOUT_MS)
        self._login_if_asked(ready)
        self.page.wait_for_selector(ready, state="visible", timeout=TIMEOUT_MS)

    def runs_list(self, expect: str) -> str:
        """The rendered text of the runs list (/runs), once `expect` (e.g. a run name) shows."""
        self.open("/runs", f"text={expect}")
        return self.page.inner_text("body")

    def run_row(self, name: str) -> str:
        """The text of the runs list's row for the run named `name` (flow, name, tags, state,
        start, parameters, duration, task runs), read from the rendered list."""
        self.open("/runs", f"text={name}")
        link = self.page.get_by_text(name, exact=True).first
        return str(link.evaluate(_ROW_JS))

    def run_page(self, run_id: str, expect: str) -> str:
        """The text on the first screen of a flow run's page, once `expect` shows."""
        self.open(f"/runs/flow-run/{run_id}", f"text={expect}")
        self.page.wait_for_timeout(1500)  # late panels (state message, tags) settle
        return str(self.page.evaluate(_FIRST_SCREEN_JS))

    def quick_run(self, deployment_id: str, expect: str) -> str:
        """Start a deployment from its page as a person would: Run, Quick run, then Run in
        the parameters form the UI opens (the flow has required parameters, the deployment
        gives them). Returns the message the UI then shows that contains `expect`."""
        self.open(f"/deployments/deployment/{deployment_id}", "button:has-text('Run')")
        self.page.get_by_role("button", name="Run", exact=True).first.click()
        self.page.get_by_text("Quick run", exact=True).click()
        form = self.page.locator(".p-modal__card")
        form.get_by_role("button", name="Run", exact=True).click()
        return self.message(expect)

    def resume(
        self, run_id: str, *, decision: str, approver: str, comment: str, expect: str
    ) -> str:
        """Fill a paused run's Resume form (fleetflow.flowkit.change.Approval: decision,
        approver, comment) and submit it. Returns the message shown containing `expect`."""
        self.open(f"/runs/flow-run/{run_id}", "button:has-text('Resume')")
        self.page.get_by_role("button", name="Resume", exact=True).first.click()
        form = self.page.locator(".p-modal__card")
        form.locator(".p-select-button__control").first.click()
        self.page.keyboard.press("ArrowDown")  # the select's list opens on a key, not a click
        self.page.get_by_role("option", name=decision, exact=True).click()
        fields = form.locator("textarea")  # approver, comment: the form's order
        fields.nth(0).fill(approver)
        fields.nth(1).fill(comment)
        form.get_by_role("button", name="Submit", exact=True).click()
        return self.message(expect)

    def message(self, expect: str) -> str:
        """The text of the UI's message (toast) containing `expect`; if none comes, the
        assertion lists every message the UI showed meanwhile (they fade)."""
        cards = self.page.locator(".p-toast__card")
        seen: dict[str, None] = {}
        deadline = time.monotonic() + MESSAGE_TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            for text in cards.all_inner_texts():
                if expect in text:
                    return text
                seen[text] = None
            self.page.wait_for_timeout(250)
        raise AssertionError(f"no message with {expect!r}; the UI showed {list(seen)}")

    def page_text(self) -> str:
        return self.page.inner_text("body")

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def _login_if_asked(self, ready: str) -> None:
        # With PREFECT_SERVER_API_AUTH_STRING set the UI first shows a login box (one
        # password field taking the whole `user:password`); without it, no box comes.
        box = self.page.locator("input[type=password]")
        content = self.page.locator(ready)
        try:
            box.or_(content).first.wait_for(state="visible", timeout=TIMEOUT_MS)
        except PlaywrightTimeout as error:
            raise AssertionError(f"neither a login box nor {ready!r} on {self.page.url}") from error
        if not box.is_visible():
            return
        if self.auth is None:
            raise AssertionError("the UI asks for credentials and none were given")
        box.fill(self.auth)
        box.press("Enter")
        box.wait_for(state="hidden", timeout=TIMEOUT_MS)
        self.logged_in = True
        # The requests sent before the login failed with 401 and left "Authentication
        # failed" toasts over the page; a reload, now with the stored credentials, has none.
        self.page.reload(wait_until="domcontentloaded", timeout=TIMEOUT_MS)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium; always closed, even on failure. One per process at a time:
    Playwright's sync API runs one event loop, so several logins share this browser
    (each `prefect_ui` gets a context of its own: its own storage, its own login)."""
    if not CHROMIUM.exists():
        # No skip: CI installs it (tools/install-system-deps.sh); a missing browser is a bug.
        raise AssertionError(f"{CHROMIUM} is missing: run tools/install-system-deps.sh as root")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=ARGS, timeout=TIMEOUT_MS
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def prefect_ui(
    base_url: str, auth: str | None, browser: Browser | None = None
) -> Iterator[PrefectUI]:
    """A fresh browser context on `base_url` (in `browser`, else in a Chromium of its own);
    always closed, even on failure."""
    if browser is None:
        with chromium() as own, prefect_ui(base_url, auth, own) as ui:
            yield ui
        return
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        yield PrefectUI(page, base_url.rstrip("/"), auth)
    finally:
        context.close()


__all__ = ["CHROMIUM", "PrefectUI", "chromium", "prefect_ui"]
