#!/usr/bin/env python3
"""Check that docs/operations/configuration.md documents every key of config/default.toml,
documents no key that is not there, and states each set key's default as it is.

Which keys config/default.toml has (the rule):
  1. every key with a value, with its table path (`[kms.vault]` + `address` ->
     `kms.vault.address`);
  2. every commented-out example assignment, a line of the form `# key = value`, in the
     section of the nearest header above it -- a real `[a.b]` header or a commented-out
     `# [a.b]` one (so `# [bureau.oauth2]` followed by `# token_url = "..."` gives
     `bureau.oauth2.token_url`). Commented lines before the first header are ignored;
  3. every secret a section's comments name in the form `` `name` `` ... `` `name_file` ``
     (both spellings in backticks in that section's comments): both `name` and
     `name_file` are keys (`url` or `url_file` -> `database.url`, `database.url_file`).

What the document says (the format the check reads): every markdown table row whose first
cell holds one or more code spans that are dotted lower-case key paths documents those keys
(`| `database.url` · `database.url_file` | ... |`). In a table with a `default` column, a row
documenting exactly one key that has a value in default.toml must give that value, as TOML,
as the first code span of that column (`"127.0.0.1:8080"`, `20`, `true`, `["a", "b"]`).
Rows between `<!-- config-reference: planned -->` and `<!-- config-reference: end -->`
document keys announced but not yet in default.toml: they must not be in default.toml (once
one is, move its row into the reference and check its default) and do not count as
documented.

Exit status 0 when everything matches, 1 with every problem listed otherwise.
Usage: config-reference.py [--defaults PATH] [--doc PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEY_PATH = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]\s*(#.*)?$")
COMMENTED_HEADER = re.compile(r"^\s*#\s*\[\s*([a-z0-9_.\-]+)\s*\]\s*$")
COMMENTED_KEY = re.compile(r"^\s*#\s*([a-z][a-z0-9_]*)\s*=\s*\S")
ASSIGNMENT = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")
BACKTICKED = re.compile(r"`([a-z][a-z0-9_]*)`")
CODE_SPAN = re.compile(r"`([^`]+)`")
CELL_SPLIT = re.compile(r"(?<!\\)\|")
PLANNED_START = "<!-- config-reference: planned -->"
PLANNED_END = "<!-- config-reference: end -->"


class Key:
    def __init__(self, path: str, line: int, how: str, value=None, has_value=False):
        self.path = path
        self.line = line
        self.how = how  # "set", "commented", "secret"
        self.value = value
        self.has_value = has_value


def flatten(table: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for name, value in table.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def default_keys(path: Path) -> dict[str, Key]:
    text = path.read_text(encoding="utf-8")
    values = flatten(tomllib.loads(text))
    keys: dict[str, Key] = {}
    section: str | None = None
    comments: dict[str, list[tuple[int, str]]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        header = HEADER.match(line)
        commented_header = COMMENTED_HEADER.match(line)
        if header:
            section = header.group(1)
            continue
        if commented_header:
            section = commented_header.group(1)
            continue
        if section is None:
            continue
        if line.lstrip().startswith("#"):
            comments.setdefault(section, []).append((number, line))
            commented = COMMENTED_KEY.match(line)
            if commented:
                full = f"{section}.{commented.group(1)}"
                keys.setdefault(full, Key(full, number, "commented"))
            continue
        assignment = ASSIGNMENT.match(line)
        if assignment:
            full = f"{section}.{assignment.group(1)}"
            if full in values:
                keys[full] = Key(full, number, "set", values[full], True)
    # Anything tomllib found that the line scan missed (dotted keys, inline tables).
    for full, value in values.items():
        if full not in keys or not keys[full].has_value:
            keys[full] = Key(full, 0, "set", value, True)
    # Secrets named in a section's comments as `name` … `name_file`.
    for section, lines in comments.items():
        named: dict[str, int] = {}
        for number, line in lines:
            for word in BACKTICKED.findall(line):
                named.setdefault(word, number)
        for word, number in named.items():
            if word.endswith("_file") or f"{word}_file" not in named:
                continue
            for name in (word, f"{word}_file"):
                full = f"{section}.{name}"
                keys.setdefault(full, Key(full, named[name], "secret"))
    return keys


def render(value) -> str:
    """A TOML value as it is written in default.toml (and in the reference)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {render(v)}" for k, v in value.items()) + " }"
    return str(value)


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
    def __init__(self, keys: list[str], line: int, default: str | None, planned: bool):
        self.keys = keys
        self.line = line
        self.default = default
        self.planned = planned


def documented_rows(path: Path) -> list[Row]:
    rows: list[Row] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    planned = False
    default_column: int | None = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped == PLANNED_START:
            planned = True
            continue
        if stripped == PLANNED_END:
            planned = False
            continue
        if not stripped.startswith("|"):
            default_column = None
            continue
        if is_separator(stripped):
            continue
        row = cells(stripped)
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if is_separator(following.strip()):
            # A header row: remember which column holds the default.
            names = [c.strip("`* ").lower() for c in row]
            default_column = names.index("default") if "default" in names else None
            continue
        keys = [span for span in CODE_SPAN.findall(row[0]) if KEY_PATH.match(span)]
        if not keys:
            continue
        default = None
        if default_column is not None and default_column < len(row):
            default = row[default_column]
        rows.append(Row(keys, index + 1, default, planned))
    return rows


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--defaults", type=Path, default=ROOT / "config" / "default.toml")
    parser.add_argument(
        "--doc", type=Path, default=ROOT / "docs" / "operations" / "configuration.md"
    )
    args = parser.parse_args()

    try:
        keys = default_keys(args.defaults)
    except (OSError, tomllib.TOMLDecodeError) as e:
        print(f"config reference: cannot read {args.defaults}: {e}", file=sys.stderr)
        return 1
    try:
        rows = documented_rows(args.doc)
    except OSError as e:
        print(f"config reference: cannot read {args.doc}: {e}", file=sys.stderr)
        return 1

    doc, defaults = rel(args.doc), rel(args.defaults)
    problems: list[str] = []
    documented: dict[str, Row] = {}
    planned: dict[str, Row] = {}
    for row in rows:
        for key in row.keys:
            target = planned if row.planned else documented
            if key in documented or key in planned:
                first = (documented.get(key) or planned[key]).line
                problems.append(
                    f"{doc}:{row.line}: `{key}` is documented twice (first at line {first})"
                )
                continue
            target[key] = row

    for path in sorted(keys):
        key = keys[path]
        where = f"{defaults}:{key.line}" if key.line else defaults
        if path in planned:
            problems.append(
                f"{doc}:{planned[path].line}: `{path}` is now in {where} but still listed "
                "under the keys being added: move its row into the reference and check its "
                "type, default and meaning"
            )
        elif path not in documented:
            kind = {"set": "", "commented": " (commented-out example)", "secret": " (secret)"}
            problems.append(
                f"{where}: `{path}`{kind[key.how]} has no entry in {doc}"
            )

    for path, row in sorted(documented.items()):
        if path not in keys:
            problems.append(
                f"{doc}:{row.line}: `{path}` is documented but is not a key of "
                f"{defaults}"
            )
            continue
        key = keys[path]
        if key.has_value and len(row.keys) == 1:
            expected = render(key.value)
            spans = CODE_SPAN.findall(row.default or "")
            given = spans[0] if spans else (row.default or "")
            if row.default is None:
                problems.append(
                    f"{doc}:{row.line}: `{path}`: the row is in a table without a "
                    "`default` column"
                )
            elif normalize(given) != normalize(expected):
                problems.append(
                    f"{doc}:{row.line}: `{path}`: documented default {given!r}, "
                    f"{defaults} has {expected}"
                )

    if problems:
        print(f"config reference: {len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(
        f"config reference: all {len(keys)} keys of {args.defaults.name} documented "
        f"({len(planned)} more announced)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
