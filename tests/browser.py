"""A real headless browser for the tests of pages a person reads (the auditors' report, the staff page)."""

import os
import shutil

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def browser():
    """Debian's chromium driven by its chromedriver, or a skip that says why not."""
    if not (os.access(CHROMIUM, os.X_OK) and shutil.which(CHROMEDRIVER)):
        pytest.skip(f"no headless browser: {CHROMIUM} and {CHROMEDRIVER} are absent "
                    "(.ci/run installs Debian's chromium and chromium-driver where apt can)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium must not look for a driver online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
