# SPDX-License-Identifier: MIT
"""Fixtures for the hostile-client tests: the integration harness (`cdn`
factory of daemons with generated INI files, free ports, READY=1 readiness,
logs on failure, exit 0 on SIGTERM checked at teardown), imported as is."""

import importlib.util
import resource
import sys
from pathlib import Path

_integration = Path(__file__).resolve().parent.parent / "integration"
sys.path.insert(0, str(_integration))

_spec = importlib.util.spec_from_file_location("cdn_integration_conftest",
                                               _integration / "conftest.py")
_harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_harness)

# Re-exported: fixtures and hooks of the integration suite.
cdn = _harness.cdn
workdir = _harness.workdir
pytest_configure = _harness.pytest_configure
pytest_runtest_makereport = _harness.pytest_runtest_makereport
DEFAULT_PAGE = _harness.DEFAULT_PAGE
FAST_PROBE = _harness.FAST_PROBE

# Thousands of sockets on both ends: raise the soft limit to the hard one
# (the daemons inherit it).
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft < _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
