#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Every source file (C++, meson, Python, shell, units, man sources, bash
completion) names its licence in an SPDX-License-Identifier line near its top,
and LICENSE.md holds the text. Usage: spdx_test.py SOURCE_ROOT"""

import os
import sys

TAG = "SPDX-License-Identifier: MIT"
SKIP_DIRS = {".git", "corpus", "examples", "node_modules", "debian"}
SUFFIXES = (".cc", ".hpp", ".h", ".py", ".sh", ".mjs", ".js", ".css", ".html", ".scd", ".in",
            ".socket")
NAMES = {"meson.build", "meson_options.txt"}


def wanted(root, rel):
    name = os.path.basename(rel)
    if name in NAMES or name.endswith(SUFFIXES):
        return True
    if rel.startswith("completions/"):
        return True
    with open(os.path.join(root, rel), "rb") as f:
        return f.read(2) == b"#!"


def main():
    root = sys.argv[1]
    missing = []
    count = 0
    for d, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(d, root)
        dirs[:] = [x for x in dirs if x not in SKIP_DIRS and not x.startswith(("build", "."))]
        for name in files:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if not wanted(root, rel):
                continue
            count += 1
            with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
                head = f.read(600)
            if TAG not in head:
                missing.append(rel)
    with open(os.path.join(root, "LICENSE.md")) as f:
        licence = f.read()
    ok = "MIT License" in licence and "Permission is hereby granted" in licence
    print(f"{count} source files checked")
    for m in missing:
        print(f"FAIL {m}: no '{TAG}' in its first lines")
    if not ok:
        print("FAIL LICENSE.md: not the MIT licence text")
    return 1 if missing or not ok or count < 100 else 0


if __name__ == "__main__":
    sys.exit(main())
