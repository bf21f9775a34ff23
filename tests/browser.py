"""Headless Chromium for the console tests: the distribution's ``chromium`` and
``chromium-driver`` packages (installed by ``.ci/run``), driven by selenium; nothing is
downloaded at run time (an explicit driver path keeps Selenium Manager out of it)."""

from __future__ import annotations

import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "chromium-driver")
IMPLICIT_WAIT_S = 20


def _which(names: tuple[str, ...]) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


def chromium(width: int = 1280, height: int = 900) -> webdriver.Chrome:
    """A headless Chromium session; fails with the package to install when one is missing."""
    binary, driver = _which(BROWSERS), _which(DRIVERS)
    if binary is None or driver is None:
        pytest.fail("headless Chromium is missing: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    # the page's console messages, Content-Security-Policy violations among them
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    # a click that submits a form returns before the next page loads: lookups wait for it
    browser.implicitly_wait(IMPLICIT_WAIT_S)
    return browser
