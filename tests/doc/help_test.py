#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Each program's --help against its man page: the OPTIONS section describes
exactly the options --help lists (short and long), EXIT STATUS exactly
the exit codes --help lists, and every file --help names (/etc/..., the
temporary file) is in the page. A flag or an exit code added to the code without
its documentation (or a documented one removed from the code) fails here.
Usage: help_test.py SOURCE_ROOT BUILD_ROOT"""

import re
import subprocess
import sys
from pathlib import Path

PROGRAMS = {
    "cdn-replicad": ("daemons/replicad/cdn-replicad", "docs/man/cdn-replicad.8.scd"),
    "cdn-balancerd": ("daemons/balancerd/cdn-balancerd", "docs/man/cdn-balancerd.8.scd"),
    "cdn-get": ("client/cdn-get", "docs/man/cdn-get.1.scd"),
    "cdn-purge": ("client/cdn-purge", "docs/man/cdn-purge.1.scd"),
}
OPTION = re.compile(r"--?[a-z][a-z-]*")
FILE = re.compile(r"(?:/(?:etc|var|usr)(?:/[\w.*-]+)+|\.FILE\.[\w.-]+)")


def help_sections(text):
    """(options, exit codes) from CLI11's --help with our footer: option lines
    are indented and start with '-'; exit codes are the indented numbers under
    'Exit codes:'."""
    options, codes = set(), set()
    in_codes = False
    for line in text.splitlines():
        if re.match(r"^  +-", line):
            options.update(OPTION.findall(line.split()[0]))
        if line.startswith("Exit codes:"):
            in_codes = True
        elif in_codes:
            m = re.match(r"^ +(\d+) ", line)
            if m:
                codes.add(m.group(1))
            elif not line.strip() or not line.startswith(" "):
                in_codes = False
    return options, codes


def man_sections(text):
    """(options, exit codes) from the scdoc source: '*-c, --config* _FILE_'
    lines under '# OPTIONS', '*N*' lines under '# EXIT STATUS'."""
    options, codes = set(), set()
    section = None
    for line in text.splitlines():
        if line.startswith("# "):
            section = line[2:].strip()
        elif section == "OPTIONS" and line.startswith("*-"):
            options.update(OPTION.findall(line[1:line.index("*", 1)]))
        elif section == "EXIT STATUS":
            m = re.match(r"^\*(\d+)\*$", line)
            if m:
                codes.add(m.group(1))
    return options, codes


def compare(what, in_help, in_man, failures):
    for x in sorted(in_help - in_man):
        failures.append(f"{what}: {x} is in --help but not in the man page")
    for x in sorted(in_man - in_help):
        failures.append(f"{what}: {x} is in the man page but not in --help")


def main():
    src, build = Path(sys.argv[1]), Path(sys.argv[2])
    failures = []
    for name, (exe, page) in PROGRAMS.items():
        r = subprocess.run([str(build / exe), "--help"], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=30)
        if r.returncode != 0:
            failures.append(f"{name} --help exited {r.returncode}: {r.stderr}")
            continue
        h_opts, h_codes = help_sections(r.stdout)
        m_opts, m_codes = man_sections((src / page).read_text())
        # A guard against a parser that finds nothing and so compares two empty sets.
        if len(h_opts) < 8 or len(h_codes) < 3:
            failures.append(f"{name}: only {sorted(h_opts)} and codes {sorted(h_codes)} "
                            "read from --help")
        compare(f"{name} option", h_opts, m_opts, failures)
        compare(f"{name} exit code", h_codes, m_codes, failures)
        page_text = (src / page).read_text().replace("\\", "")
        files = sorted(set(FILE.findall(r.stdout)))
        for path in files:
            if path not in page_text:
                failures.append(f"{name}: --help names {path}, the man page does not")
        print(f"checked {name}: {len(h_opts)} options, exit codes "
              f"{' '.join(sorted(h_codes, key=int))}, files {' '.join(files)}")
    for f in failures:
        print(f"FAIL {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
