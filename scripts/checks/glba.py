#!/usr/bin/env python3
"""Check docs/glba.md, the GLBA Safeguards Rule (16 CFR 314.4) mapping.

The mapping is the markdown table whose header has the columns `Control`, `How ...`,
`Code` and `Test`. For every row:

- each test named in the Test column as `tests/api/<file>.rs::<fn>` or `src/<path>.rs::<fn>`
  must exist: the file exists, `fn <fn>` is defined in it, and a test attribute
  (`#[test]`, `#[tokio::test]`, `#[sqlx::test]`, ... -- any `#[...test...]` path ending in
  `test`) stands within the 6 lines above it; a file under tests/api/ must also be a module
  of tests/api/main.rs, or its tests never run;
- a technical row -- any row whose How column does not start with "Organizational" (rows
  that only mention an organizational part are technical) -- must name at least one test;
  an organizational row may say `n/a (organizational)` instead;
- each path in backticks in the Code column must exist in the repository;
- every control of 314.4 (a) ... (i) must have at least one row.

Tests marked `#[ignore]` are reported (they run only when asked for by name: scripts/test
runs the restore drill so, and the Vault contract where Vault is reachable) but do not fail
the check. Exit 0 when everything holds, 1 with every problem listed.
Usage: glba.py [--doc PATH] [--root PATH]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_REF = re.compile(r"((?:tests|src)/[A-Za-z0-9_./-]+\.rs)::([A-Za-z_][A-Za-z0-9_]*)")
TEST_ATTR = re.compile(r"^\s*#\[\s*(?:[A-Za-z_][A-Za-z0-9_]*::)*test\b")
IGNORE_ATTR = re.compile(r"^\s*#\[\s*ignore\b")
CODE_SPAN = re.compile(r"`([^`]+)`")
PATH_LIKE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.{}*-]*)*$")
CELL_SPLIT = re.compile(r"(?<!\\)\|")
LOOKBACK = 6
REQUIRED = [
    "314.4(a)", "314.4(b)", "314.4(c)(1)", "314.4(c)(2)", "314.4(c)(3)", "314.4(c)(4)",
    "314.4(c)(5)", "314.4(c)(6)", "314.4(c)(7)", "314.4(c)(8)", "314.4(d)", "314.4(e)",
    "314.4(f)", "314.4(g)", "314.4(h)", "314.4(i)",
]


def cells(line: str) -> list[str]:
    inner = line.strip()
    if inner.startswith("|"):
        inner = inner[1:]
    if inner.endswith("|") and not inner.endswith("\\|"):
        inner = inner[:-1]
    return [c.strip().replace("\\|", "|") for c in CELL_SPLIT.split(inner)]


def is_separator(line: str) -> bool:
    return bool(re.match(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$", line))


class Row:
    def __init__(self, line: int, control: str, how: str, code: str, test: str):
        self.line, self.control, self.how, self.code, self.test = line, control, how, code, test


def mapping_rows(doc: Path) -> list[Row]:
    lines = doc.read_text(encoding="utf-8").splitlines()
    rows: list[Row] = []
    columns: dict[str, int] | None = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.startswith("|"):
            columns = None
            continue
        if is_separator(stripped):
            continue
        row = cells(stripped)
        following = lines[index + 1].strip() if index + 1 < len(lines) else ""
        if is_separator(following):
            names = [c.lower() for c in row]
            found: dict[str, int] = {}
            for i, name in enumerate(names):
                for column in ("control", "how", "code", "test"):
                    if column not in found and name.startswith(column):
                        found[column] = i
            columns = found if len(found) == 4 else None
            continue
        if columns is None:
            continue
        get = lambda name: row[columns[name]] if columns[name] < len(row) else ""  # noqa: E731
        rows.append(Row(index + 1, get("control"), get("how"), get("code"), get("test")))
    return rows


def find_test(root: Path, file: str, name: str) -> tuple[str | None, bool]:
    """(problem or None, ignored)"""
    path = root / file
    if not path.is_file():
        return f"`{file}` does not exist", False
    if file.startswith("tests/api/") and file.count("/") == 2 and file != "tests/api/main.rs":
        module = Path(file).stem
        main = (root / "tests/api/main.rs").read_text(encoding="utf-8")
        if not re.search(rf"^\s*(pub\s+)?mod\s+{re.escape(module)}\s*;", main, re.M):
            return f"`{file}` is not a module of tests/api/main.rs, so its tests never run", False
    lines = path.read_text(encoding="utf-8").splitlines()
    definition = re.compile(
        rf"^\s*(pub(\([a-z]+\))?\s+)?(async\s+)?(unsafe\s+)?fn\s+{re.escape(name)}\s*[(<]"
    )
    defined = False
    for number, line in enumerate(lines):
        if not definition.match(line):
            continue
        defined = True
        above = lines[max(0, number - LOOKBACK):number]
        if any(TEST_ATTR.match(a) for a in above):
            return None, any(IGNORE_ATTR.match(a) for a in above)
    if defined:
        return f"`fn {name}` in `{file}` is not a test (no test attribute above it)", False
    return f"`fn {name}` is not defined in `{file}`", False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "glba.md")
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args()
    root = args.root.resolve()
    try:
        rows = mapping_rows(args.doc)
    except OSError as e:
        print(f"glba mapping: cannot read {args.doc}: {e}", file=sys.stderr)
        return 1
    try:
        doc = str(args.doc.resolve().relative_to(root))
    except ValueError:
        doc = str(args.doc)

    problems: list[str] = []
    ignored: list[str] = []
    tests_named = 0
    if not rows:
        problems.append(f"{doc}: no mapping table (columns Control, How, Code, Test) found")
    for row in rows:
        label = re.sub(r"[*`]", "", row.control).split(" ")[0] or "row"
        where = f"{doc}:{row.line} ({label})"
        refs = TEST_REF.findall(row.test)
        organizational = re.sub(r"^[\s*_]+", "", row.how).lower().startswith("organizational")
        if not refs:
            if not organizational:
                problems.append(f"{where}: a technical row names no test")
            elif "n/a" not in row.test.lower():
                problems.append(
                    f"{where}: an organizational row must name a test or say `n/a (organizational)`"
                )
        for file, name in refs:
            tests_named += 1
            problem, is_ignored = find_test(root, file, name)
            if problem:
                problems.append(f"{where}: {file}::{name}: {problem}")
            elif is_ignored:
                ignored.append(f"{file}::{name}")
        for span in CODE_SPAN.findall(row.code):
            candidate = span.split("::")[0].split("#")[0].strip()
            if not candidate or " " in candidate or not PATH_LIKE.match(candidate):
                continue
            if "/" not in candidate and "." not in candidate:
                continue
            if any(ch in candidate for ch in "{}*"):
                continue
            if not (root / candidate).exists():
                problems.append(f"{where}: code path `{candidate}` does not exist")
    for control in REQUIRED:
        if not any(
            re.sub(r"[\s*`]", "", row.control).startswith(control) for row in rows
        ):
            problems.append(f"{doc}: no row for {control}")

    if problems:
        print(f"glba mapping: {len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    note = ""
    if ignored:
        note = f"; {len(set(ignored))} marked #[ignore], run by name: " + ", ".join(
            sorted(set(ignored))
        )
    print(f"glba mapping: {len(rows)} rows, {tests_named} test references, all found{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
