"""Browser fixtures: headless Chromium from Debian's packages, driven by Playwright, on a real server.

Pages add nothing database-specific, so these run on SQLite only. Playwright never downloads a
browser here: it launches /usr/bin/chromium.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.browser.seed import seed
from tests.conftest import running_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts"
PASSWORD = "correct horse battery staple"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: headless Chromium against a real server (SQLite only)")


@dataclass
class Site:
    """A running server with seeded data, and the accounts to sign in with."""

    base: str
    database_url: str
    auth: bool
    rehab: bool
    clinician: str = "clin"
    auditor: str = "audit"
    password: str = PASSWORD


def _cli(database_url: str, *args: str, stdin: str = "") -> str:
    env = dict(os.environ, DATABASE_URL=database_url)
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return err.code


@contextlib.contextmanager
def _drained(log_path: pathlib.Path) -> Iterator[None]:
    """Copy the server's output to a file while it runs.

    running_server pipes gunicorn's stdout (the access log) and never reads it: after ~300
    requests the pipe is full and the server blocks. A page session makes that many requests,
    so keep the pipe empty here (until running_server sends its output somewhere else).
    """
    real_popen = subprocess.Popen

    def pump(stream: Any) -> None:
        with open(log_path, "ab") as out:
            for line in iter(stream.readline, b""):
                out.write(line)

    class _Popen(real_popen):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            subprocess.Popen = real_popen  # type: ignore[misc]  # only the server's own start
            super().__init__(*args, **kwargs)
            if self.stdout is not None:
                threading.Thread(target=pump, args=(self.stdout,), daemon=True).start()

    subprocess.Popen = _Popen  # type: ignore[misc]
    try:
        yield
    finally:
        subprocess.Popen = real_popen  # type: ignore[misc]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A gunicorn server on a fresh SQLite database, seeded, with a clinician and an auditor account."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver")
    url = "sqlite:///" + str(tmp_path_factory.mktemp("pages") / "pages.db")
    ARTIFACTS.mkdir(exist_ok=True)
    with _drained(ARTIFACTS / "server.log"), running_server(url, workers=1) as base:
        seed(url, base)
        auth = _status(base + "/.well-known/smart-configuration") == 200
        # The route answers 401 (or 200 on an open server) once /rehab is wired; 404 until then.
        rehab = _status(base + "/rehab/patients/ada/progress") != 404
        if auth:
            # No `client add rehabfhir-web`: `rehabfhir serve` registers the pages' client itself.
            _cli(
                url,
                "user",
                "add",
                "clin",
                "--role",
                "practitioner",
                "--fhir-user",
                "Practitioner/pt1",
                "--password-stdin",
                stdin=PASSWORD + "\n",
            )
            _cli(url, "user", "add", "audit", "--role", "auditor", "--password-stdin", stdin=PASSWORD + "\n")
        yield Site(base=base, database_url=url, auth=auth, rehab=rehab)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (own sessionStorage) per test; console errors are collected on it."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    pg.console_errors = []  # type: ignore[attr-defined]
    # Script errors and CSP violations; failed loads are checked through `failed` (with their URLs).
    pg.on(
        "console",
        lambda m: (
            m.type == "error"
            and not m.text.startswith("Failed to load resource")
            and pg.console_errors.append(m.text)
        ),
    )  # type: ignore[attr-defined]
    pg.failed = []  # type: ignore[attr-defined]
    pg.on(
        "response", lambda r: r.status >= 400 and pg.failed.append(f"{r.status} {r.request.method} {r.url}")
    )  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.console_errors.append(str(e)))  # type: ignore[attr-defined]
    pg.dialogs = []  # type: ignore[attr-defined]
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
    yield pg
    context.close()


def shot(page: Any, name: str) -> pathlib.Path:
    """Save a full-page screenshot to test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def failed_requests(page: Any, site: Site) -> list[str]:
    """Requests the page made that failed, apart from /rehab while that is not wired yet."""
    return [f for f in page.failed if site.rehab or "/rehab/" not in f]


def sign_in(page: Any, site: Site, path: str, username: str, screenshots: bool = False) -> None:
    """Open a page, press Sign in, log in and approve through the server's own pages, land back on it."""
    page.goto(site.base + path)
    page.locator("#sign-in-main").click()
    if site.auth:
        page.wait_for_url("**/auth/**")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", site.password)
        if screenshots:
            shot(page, "01b-auth-login")
        page.locator("form button[type=submit], form input[type=submit]").first.click()
        if screenshots:
            page.locator("button[name=decision][value=approve]").wait_for()
            shot(page, "01c-auth-consent")
        page.locator("button[name=decision][value=approve]").click()
    page.wait_for_url(site.base + path)
    page.locator("#sign-out").wait_for()
