"""Fixtures of the browser tests: a real JupyterLab per module and headless Debian chromium through Playwright.

Each test gets a fresh browser page; the console errors it logs are collected, and when the
test fails a screenshot of the page is saved in the test's own ``tmp_path`` (pytest prints
where). With ``SCALER_JUPYTER_PICTURES=DIR`` the tests also save the README's pictures there
(``make pictures``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.ui.lab import CHROMIUM, CHROMIUM_FLAGS, JupyterLab

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium", allow_module_level=True)

from playwright.sync_api import sync_playwright


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so a fixture can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="module")
def notebook_root(tmp_path_factory) -> Path:
    """The folder Lab serves: the notebooks the tests open live here."""
    return tmp_path_factory.mktemp("lab-root")


@pytest.fixture(scope="module")
def lab(notebook_root):
    """A JupyterLab server under a non-root base URL, stopped (with its kernels) when the module ends."""
    server = JupyterLab(notebook_root)
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium, driven by Playwright (whose driver stops with the module)."""
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, request, tmp_path):
    """A fresh page; ``page.console_errors`` lists what the console reported as errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30_000)
    instance = context.new_page()
    instance.console_errors = []
    instance.on("console", lambda message: message.type == "error" and instance.console_errors.append(message.text))
    instance.on("pageerror", lambda error: instance.console_errors.append(str(error)))
    yield instance
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        shot = tmp_path / "failure.png"
        instance.screenshot(path=shot, full_page=True)
        print(f"screenshot of the failed page: {shot}")
    context.close()


@pytest.fixture
def picture(tmp_path):
    """``picture(locator, name)`` screenshots an element into tmp_path, and into $SCALER_JUPYTER_PICTURES if set."""
    folder = os.environ.get("SCALER_JUPYTER_PICTURES")

    def take(locator, name: str) -> Path:
        path = tmp_path / name
        locator.screenshot(path=path)
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(folder) / name)
        return path

    return take
