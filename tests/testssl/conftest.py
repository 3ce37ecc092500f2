# SPDX-License-Identifier: MIT
"""Fixtures for the testssl.sh scan: the integration harness (`cdn` factory of
daemons with generated INI files, free ports, READY=1 readiness, logs on
failure, exit 0 on SIGTERM checked at teardown), imported as is."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
import cdnlib  # noqa: E402  (found through the path above)

_harness = cdnlib.integration_conftest()
cdn, workdir = _harness.cdn, _harness.workdir
pytest_configure = _harness.pytest_configure
pytest_runtest_makereport = _harness.pytest_runtest_makereport
