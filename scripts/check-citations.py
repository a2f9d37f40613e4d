#!/usr/bin/env python3
"""Comments, docs and tests cite the repository's own docs (CONTRIBUTING.md):
no clause of the contract the project started from (which is not in the repository), no
issue number, and no
"§N.N" that docs/guarantees.md does not have. Run by `make lint`; exits 1 naming each
offending line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUARANTEES = ROOT / "docs" / "guarantees.md"
#: What may not be cited at all: the contract's old name and issue numbers.
FORBIDDEN = re.compile("SPEC" + r" §|\b[Ii]ssues? #?[0-9]+")
CLAUSE = re.compile(r"§([0-9]+(?:\.[0-9]+)?)")


def clauses() -> set[str]:
    """The sections (``## N.``), clauses (``**N.N**``) and the numbered points of section 0
    (``1. **...**``, cited as §0.N) of docs/guarantees.md."""
    found: set[str] = set()
    section = None
    for line in GUARANTEES.read_text().splitlines():
        if heading := re.match(r"## ([0-9]+)\. ", line):
            section = heading[1]
            found.add(section)
        elif clause := re.match(r"\*\*([0-9]+\.[0-9]+)\*\*", line):
            found.add(clause[1])
        elif section == "0" and (point := re.match(r"([0-9]+)\. \*\*", line)):
            found.add(f"0.{point[1]}")
    return found


def main() -> int:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
    ).stdout.split("\0")
    known = clauses()
    problems = []
    for name in tracked:
        path = ROOT / name
        if not name or name == "scripts/check-citations.py" or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if FORBIDDEN.search(line):
                problems.append(
                    f"{name}:{number}: cites what is not in the repository: {line.strip()}"
                )
            if name == "docs/guarantees.md":
                continue
            for cited in CLAUSE.findall(line):
                if cited not in known:
                    problems.append(
                        f"{name}:{number}: §{cited} is not a clause of docs/guarantees.md"
                    )
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
