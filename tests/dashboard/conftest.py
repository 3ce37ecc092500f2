# SPDX-License-Identifier: MIT
"""Fixtures for the dashboard tests: the integration harness (`cdn` factory
of daemons, logs on failure, exit 0 on SIGTERM checked at teardown), imported
as is, and `browser`, a headless Chromium driven over DevTools (cdp.py)."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

_here = Path(__file__).resolve().parent
_integration = _here.parent / "integration"
sys.path.insert(0, str(_integration))
sys.path.insert(0, str(_here))

_spec = importlib.util.spec_from_file_location("cdn_integration_conftest",
                                               _integration / "conftest.py")
_harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_harness)

import cdp  # noqa: E402

cdn = _harness.cdn
workdir = _harness.workdir
pytest_configure = _harness.pytest_configure
pytest_runtest_makereport = _harness.pytest_runtest_makereport
DEFAULT_PAGE = _harness.DEFAULT_PAGE


@pytest.fixture
def browser(cdn):
    if cdp.chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install chromium; scripts/deps.sh)")
    b = cdp.Browser.launch(cdn.tempdir("cdn-chromium-"))
    yield b
    b.close()


@pytest.fixture
def artefacts():
    """Where screenshots are kept: the suite's meson build dir (or a temp dir
    when run by hand)."""
    d = Path(os.environ.get("CDN_ARTEFACT_DIR") or _harness.cdnlib.short_tempdir("cdn-art-"))
    d.mkdir(parents=True, exist_ok=True)
    return d
