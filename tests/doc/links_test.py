#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The Markdown files (README.md, docs/*.md, bench/README.md) cite only what
the repository holds: every relative link names a file that exists, and its
#anchor a heading of that file; every `path` in backticks that starts with a
top-level entry of the repository exists (globs allowed); README.md names
nothing outside the repository (`../`). The README's first code block lists
commands that exist and are executable. Usage: links_test.py SOURCE_ROOT"""

import glob
import os
import re
import sys
from pathlib import Path

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")
# A repository path: words joined by '/', a glob at most; no spaces, no options.
PATH = re.compile(r"^[\w.-]+(/[\w.*-]+)*/?$")


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces
    to '-'."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    out = set()
    fenced = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            out.add(slug(line.lstrip("#")))
    return out


def prose(text):
    """The text outside fenced code blocks (a shell session may name any path)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def check_file(root, md, failures):
    text = md.read_text()
    rel = md.relative_to(root)
    tops = {p.name for p in root.iterdir()}
    count = 0
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue  # http:, https:, mailto:, man:
        file_part, _, anchor = target.partition("#")
        dest = (md.parent / file_part).resolve() if file_part else md.resolve()
        count += 1
        if not dest.exists():
            failures.append(f"{rel}: link to {target}: no such file")
        elif root.resolve() not in dest.parents and dest != root.resolve():
            failures.append(f"{rel}: link to {target}: outside the repository")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            failures.append(f"{rel}: link to {target}: no heading #{anchor} in {file_part or rel}")
    for code in CODE.findall(prose(text)):
        code = code.strip()
        if rel == Path("README.md") and code.startswith("../"):
            failures.append(f"{rel}: `{code}` is outside the repository")
            continue
        if not PATH.match(code) or "/" not in code.rstrip("/"):
            continue
        if code.split("/")[0] not in tops:
            continue  # /etc/cdn/..., a URL path, a MIME type
        count += 1
        if not glob.glob(str(root / code)):
            failures.append(f"{rel}: `{code}` is not in the repository")
    return count


def check_first_commands(root, failures):
    text = (root / "README.md").read_text()
    m = re.search(r"^```sh\n(.*?)^```", text, flags=re.M | re.S)
    if not m:
        failures.append("README.md: no ```sh block")
        return
    commands = [line.split()[0] for line in m.group(1).splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    if len(commands) < 2:
        failures.append(f"README.md: the first code block has {commands}, not two commands")
    for c in commands:
        p = root / c
        if not (p.is_file() and os.access(p, os.X_OK)):
            failures.append(f"README.md: the first code block's {c} is not an executable file")


def main():
    root = Path(sys.argv[1])
    files = [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "bench" / "README.md"]
    failures = []
    for md in files:
        if md.exists():
            print(f"checked {md.relative_to(root)}: {check_file(root, md, failures)} citations")
    check_first_commands(root, failures)
    for f in failures:
        print(f"FAIL {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
