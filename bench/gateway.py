"""Benchmark: what the access gateway (issue #22) adds to each API request and to the UI.

One stack (`fleetflow stack up`, no workers; PostgreSQL from FLEETFLOW_BENCH_POSTGRES,
default the local server, or SQLite with --sqlite), 40 finished flow runs made through the
API. Then, interleaved (round robin, one request of each side per round, each side on its
own keep-alive connection like the UI's and Prefect's clients):

- `POST /api/flow_runs/filter` (10 runs, newest first) and `GET /api/flow_runs/{id}`,
  straight to the server's loopback port with its internal credential, through the
  gateway with a viewer's `name:password` (login cached after the first request), and
  through the gateway with the stack's service credential (no login: compared with the
  internal credential in constant time);
- the UI's runs page in headless Chromium (/usr/bin/chromium, Playwright), from `goto` until
  the newest run's name has rendered, through the gateway (viewer) and straight from the
  server's port (its /ui-settings answer rewritten to point the UI at that port: the
  server tells the UI the gateway's URL); each page's /api requests counted.

Run: fleetflow bench gateway [--requests 300] [--pages 10] [--sqlite] [--no-write]
(or .venv/bin/python bench/gateway.py; removes what it starts)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _common import BIN, drop_database, free_port, write_section

CHROMIUM = Path("/usr/bin/chromium")
RUNS = 40
VIEWER = "bench-viewer"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@dataclass
class Stack:
    public: str  # the gateway: http://127.0.0.1:PORT
    internal: str  # the server behind it: http://127.0.0.1:INTERNAL_PORT
    service: str  # the stack's credential (user fleetflow), also the server's own
    viewer: str  # name:password of a viewer
    newest_run: str = ""  # name of the newest flow run (the runs page's first row)
    run_ids: tuple[str, ...] = ()


@contextmanager
def stack(sqlite: bool) -> Iterator[Stack]:
    """A stack without workers in a temporary directory, a viewer added through the
    CLI; always stopped, its database dropped."""
    base = os.environ.get("FLEETFLOW_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
    database = "" if sqlite else f"{base}/fleetflow_bench_gateway_{os.getpid()}"
    service = f"fleetflow:{secrets.token_urlsafe(24)}"
    viewer = f"{VIEWER}:{secrets.token_urlsafe(18)}"
    with tempfile.TemporaryDirectory(prefix="ff-bench-stack-") as directory:
        port = free_port()
        env = {**os.environ, "FLEETFLOW_STACK_DIR": directory, "FLEETFLOW_API_AUTH": service,
               "FLEETFLOW_API_PORT": str(port)}  # fmt: skip
        env.pop("FLEETFLOW_DATABASE_URL", None)
        if database:
            env["FLEETFLOW_DATABASE_URL"] = database
        config = Path(directory) / "stack.yaml"
        config.write_text("work_pool: {name: bench, queues: [{name: bench}]}\nworkers: []\n")
        fleetflow = str(BIN / "fleetflow")
        try:
            subprocess.run([fleetflow, "stack", "up", "--config", str(config)], env=env,
                           check=True)  # fmt: skip
            state = json.loads((Path(directory) / "stack.json").read_text())
            password = viewer.partition(":")[2] + "\n"  # stdin: never argv
            subprocess.run([fleetflow, "users", "add", VIEWER, "--role", "viewer"], env=env,
                           input=password, text=True, check=True)  # fmt: skip
            yield Stack(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{state['internal_port']}",
                        service, viewer)  # fmt: skip
        finally:
            subprocess.run([fleetflow, "stack", "down", "--config", str(config)], env=env,
                           check=False)  # fmt: skip
            if database:
                drop_database(database)


def _client(base: str, auth: str) -> httpx.Client:
    name, _, password = auth.partition(":")
    return httpx.Client(base_url=f"{base}/api", auth=(name, password), timeout=60)


def seed(target: Stack) -> Stack:
    """RUNS finished flow runs of one flow, made straight on the server."""
    with _client(target.internal, target.service) as api:
        flow = api.post("/flows/", json={"name": "bench-gateway"}).raise_for_status().json()
        ids, name = [], ""
        for index in range(RUNS):
            name = f"bench-gateway-run-{index:03d}-{secrets.token_hex(3)}"
            run = api.post("/flow_runs/", json={
                "flow_id": flow["id"], "name": name, "tags": ["bench"],
                "state": {"type": "COMPLETED", "name": "Completed"},
            }).raise_for_status().json()  # fmt: skip
            ids.append(run["id"])
    target.newest_run, target.run_ids = name, tuple(ids)
    return target


# -- API requests ------------------------------------------------------------------------


def _requests(api: httpx.Client, run_ids: tuple[str, ...]) -> dict[str, Callable[[], float]]:
    body = {"limit": 10, "sort": "EXPECTED_START_TIME_DESC"}
    position = iter(range(10**9))

    def filter_runs() -> float:
        started = time.perf_counter()
        api.post("/flow_runs/filter", json=body).raise_for_status()
        return time.perf_counter() - started

    def read_run() -> float:
        run_id = run_ids[next(position) % len(run_ids)]
        started = time.perf_counter()
        api.get(f"/flow_runs/{run_id}").raise_for_status()
        return time.perf_counter() - started

    return {"filter": filter_runs, "read": read_run}


def measure_api(target: Stack, count: int) -> tuple[dict[str, dict[str, list[float]]], float]:
    """Seconds per request, per side and kind; and the viewer's first request (its login,
    argon2 verification, before the cache holds it)."""
    sides = {
        "direct": _client(target.internal, target.service),
        "gateway, viewer": _client(target.public, target.viewer),
        "gateway, service": _client(target.public, target.service),
    }
    try:
        cold = _requests(sides["gateway, viewer"], target.run_ids)["read"]()
        calls = {side: _requests(client, target.run_ids) for side, client in sides.items()}
        names = list(calls)
        for _ in range(20):  # warm-up: connections, the server's caches
            for side in names:
                calls[side]["filter"](), calls[side]["read"]()
        times: dict[str, dict[str, list[float]]] = {s: {"filter": [], "read": []} for s in names}
        for index in range(count):
            for side in names[index % 3 :] + names[: index % 3]:
                for kind in ("filter", "read"):
                    times[side][kind].append(calls[side][kind]())
        return times, cold
    finally:
        for client in sides.values():
            client.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the UI's runs page --------------------------------------------------------------------


def measure_pages(target: Stack, count: int) -> dict[str, tuple[list[float], list[int]]]:
    """Seconds until the runs list shows the newest run, and /api requests per load."""
    from playwright.sync_api import Route, sync_playwright

    def point_ui_at_the_server(route: Route) -> None:
        settings = route.fetch().json()
        settings["api_url"] = f"{target.internal}/api"
        route.fulfill(json=settings)

    with tempfile.TemporaryDirectory(prefix="ff-chromium-") as profile, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS,
            viewport={"width": 1280, "height": 800},
        )  # fmt: skip
        try:
            pages = {"gateway, viewer": browser.new_page(), "direct": browser.new_page()}
            pages["direct"].route(f"{target.internal}/ui-settings", point_ui_at_the_server)
            bases = {"gateway, viewer": target.public, "direct": target.internal}
            logins = {"gateway, viewer": target.viewer, "direct": target.service}
            api_calls = {side: 0 for side in pages}

            def counter(side: str) -> Callable[[Any], None]:
                def count_api(request: Any) -> None:
                    if "/api/" in request.url:
                        api_calls[side] += 1

                return count_api

            for side, page in pages.items():
                page.on("request", counter(side))
                _load(page, bases[side], target.newest_run, login=logins[side])  # warm-up
            out: dict[str, tuple[list[float], list[int]]] = {s: ([], []) for s in pages}
            names = list(pages)
            for index in range(count):
                for side in names[index % 2 :] + names[: index % 2]:
                    api_calls[side] = 0
                    seconds = _load(pages[side], bases[side], target.newest_run, login=None)
                    out[side][0].append(seconds)
                    out[side][1].append(api_calls[side])
            return out
        finally:
            browser.close()


def _load(page: Any, base: str, expect: str, *, login: str | None) -> float:
    """Seconds from navigating to /runs until `expect` is visible (logging in first if
    `login` is given and the UI asks)."""
    started = time.perf_counter()
    page.goto(f"{base}/runs", wait_until="commit", timeout=60_000)
    if login is not None:
        box = page.locator("input[type=password]")
        box.or_(page.get_by_text(expect)).first.wait_for(state="visible", timeout=60_000)
        if box.is_visible():
            box.fill(login)
            box.press("Enter")
            box.wait_for(state="hidden", timeout=60_000)
            page.goto(f"{base}/runs", wait_until="commit", timeout=60_000)
    page.get_by_text(expect).first.wait_for(state="visible", timeout=60_000)
    return time.perf_counter() - started


# -- report -----------------------------------------------------------------------------------


def report(
    api: dict[str, dict[str, list[float]]], cold: float,
    pages: dict[str, tuple[list[float], list[int]]], *, count: int, page_loads: int,
    database: str, load: tuple[tuple[float, ...], tuple[float, ...]],
) -> str:  # fmt: skip
    ms = 1000.0
    rows = []
    for kind, label in (("filter", "`POST /api/flow_runs/filter` (10 runs)"),
                        ("read", "`GET /api/flow_runs/{id}`")):  # fmt: skip
        direct50 = statistics.median(api["direct"][kind])
        direct99 = percentile(api["direct"][kind], 0.99)
        for side in ("direct", "gateway, viewer", "gateway, service"):
            p50 = statistics.median(api[side][kind])
            p99 = percentile(api[side][kind], 0.99)
            added = "" if side == "direct" else (
                f"{(p50 - direct50) * ms:+.1f} ms / {(p99 - direct99) * ms:+.1f} ms"
            )  # fmt: skip
            rows.append(f"| {label} | {side} | {p50 * ms:.1f} ms | {p99 * ms:.1f} ms | {added} |")
    page_rows = []
    direct_page = statistics.median(pages["direct"][0])
    for side in ("direct", "gateway, viewer"):
        seconds, calls = pages[side]
        p50 = statistics.median(seconds)
        added = "" if side == "direct" else f"{(p50 - direct_page) * ms:+.0f} ms"
        page_rows.append(
            f"| runs page (/runs) until the newest run's name shows | {side} | {p50:.2f} s | "
            f"{max(seconds):.2f} s | {statistics.median(calls):.0f} | {added} |"
        )
    cores = os.cpu_count()
    before, after = (" / ".join(f"{x:.2f}" for x in avg) for avg in load)
    return f"""
## Access gateway (issue #22)

`fleetflow bench gateway`: one stack (server on {database}, no workers, {RUNS} finished
flow runs), {count} requests of each kind per side, interleaved round robin after 20
warm-up rounds, one keep-alive connection per side; the page loads in headless Chromium
(warm browser cache, {page_loads} per side, alternating). "direct" is the Prefect server's
loopback port with the internal credential; "gateway, viewer" a user's `name:password`
(argon2 checked on the first request, then again every 30 s when the cache lapses);
"gateway, service" the stack's own credential (compared, never hashed).
Machine: {cores} cores, load average (1/5/15 min) {before} before, {after} after.

| request | side | p50 | p99 | gateway adds (p50 / p99) |
|---|---|---|---|---|
{chr(10).join(rows)}

| page | side | median | slowest | API requests per load | gateway adds |
|---|---|---|---|---|---|
{chr(10).join(page_rows)}

A user's first request (login checked with argon2, not yet cached): {cold * ms:.0f} ms.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="per kind and side")
    parser.add_argument("--pages", type=int, default=10, help="page loads per side")
    parser.add_argument("--sqlite", action="store_true", help="server on SQLite")
    parser.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with stack(args.sqlite) as target:
        seed(target)
        api, cold = measure_api(target, args.requests)
        pages = measure_pages(target, args.pages)
    body = report(api, cold, pages, count=args.requests, page_loads=args.pages,
                  database="SQLite" if args.sqlite else "PostgreSQL 127.0.0.1",
                  load=(load_before, os.getloadavg()))  # fmt: skip
    print(body)
    if not args.no_write:
        write_section("gateway", body)


if __name__ == "__main__":
    main()
