#!/usr/bin/env python3
"""The dependency rule of docs/architecture.md, checked on src/:

  store      a module under an aggregate imports another aggregate's `store`;
  http       something imports `crate::http` from outside `http/`, `web/` (the pages), an
             aggregate's `http` module, and the composition root (main, cli, app, state, lib);
  sql        a file other than an aggregate's `store.rs` (and `db/`, `admin/backup.rs`) holds
             SQL that touches a table an aggregate owns;
  write      an aggregate's `store.rs` writes (insert, update, delete) a table another
             aggregate owns (it may read them: scope, masking and read models join them);
  cycle      two top-level modules import each other, directly or through others;
  layer      a top-level module imports one LAYERS puts above it (or is in no layer);
  size       a file in src/ is over 600 lines;
  runtime    a file in src/ runs SQL the compiler does not check: `sqlx::query(`,
             `query_as(`, `query_scalar(`, `QueryBuilder` or `AssertSqlSafe` (every statement
             is a `query!` macro, checked against the schema: docs/architecture.md).

    scripts/checks/layers.py [SRC_DIR]      check (default: src/ of this repository)
    scripts/checks/layers.py --self-test    also break a copy of src/ on purpose, once per
                                            rule, and fail unless each break is reported

What the restructure (issue 15) has not moved yet is listed in PENDING, file by file and
rule by rule: the check fails on anything not listed there, and on a listed entry that no
longer breaks its rule (so the list only shrinks). Prints a summary: top-level modules with
their lines, the largest files, and the count of upward imports (a module importing one the
layering puts above it). Exit status 1 on any finding.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Each aggregate and the tables it owns (migrations/).
AGGREGATES = {
    # leads/credit/: a pull belongs to one borrower file, and a lead created or updated with
    # a consent queues its pull in the same transaction.
    "leads": ["leads", "credit_reports"],
    "loans": ["loans", "loan_status_history"],
    "documents": ["documents"],
    "requests": ["document_requests", "document_request_events"],
    "links": ["upload_links"],
    "los": ["los_webhook_events"],
    "notifications": ["notifications", "unsubscribe_tokens"],
    "agents": [],
    "retention": ["legal_holds", "disposals"],
    "admin": [],
}
TABLE_OWNER = {table: agg for agg, tables in AGGREGATES.items() for table in tables}
COMPOSITION_ROOT = {"main.rs", "cli.rs", "app.rs", "state.rs", "lib.rs"}
# Files allowed to hold SQL on any table: the schema's own tooling and the backup.
SQL_ANYWHERE = ("db/", "admin/backup.rs")
MAX_LINES = 600

# The layers, lowest first: a module may import from its own layer and the ones below.
LAYERS = [
    {"config", "error", "redact", "tls", "telemetry", "metrics", "domain", "events", "actor"},
    {"crypto", "db", "cache", "storage", "scan", "integrations", "queue", "ratelimit", "mail"},
    {"auth", "readiness", "audit"},
    {"state"},
    # The HTTP plumbing (edge, sign-in, idempotency, helpers) the aggregates' handlers use.
    {"http"},
    {"leads", "loans", "documents", "requests", "links", "los", "notifications", "agents",
     "retention"},
    {"admin"},
    {"web"},
    {"app", "cli", "main", "lib", "bin", "fuzzing"},
]
LAYER_OF = {m: i for i, layer in enumerate(LAYERS) for m in layer}

# What the restructure has not moved yet: (rule, file relative to src/). Each entry is
# work left, named in docs/architecture.md ("Modules and the dependency rule").
PENDING: set = set()

RUNTIME_SQL_RE = re.compile(
    r"\b(?:sqlx::query(?:_as|_scalar)?(?:::<[^>]*>)?\(|query_as::<|QueryBuilder|AssertSqlSafe)"
)
USE_RE = re.compile(r"\bcrate::([a-z_]+(?:::[a-z_]+)*)")
WRITE_RE = re.compile(r"\b(?:insert\s+into|update|delete\s+from)\s+([a-z_]+)\b", re.IGNORECASE)
SQL_RE = re.compile(
    r"\b(?:from|join|into|update|table)\s+(?:only\s+)?([a-z_]+)\b", re.IGNORECASE
)


def rust_files(src):
    for dirpath, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(dirpath, name)
                yield os.path.relpath(path, src).replace(os.sep, "/"), path


def code_of(path):
    """The file without `//` comments (doc comments mention tables and modules by name)."""
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            stripped = line.lstrip()
            if stripped.startswith("//"):
                lines.append("\n")
                continue
            lines.append(line)
    return "".join(lines)


def top_module(rel):
    first = rel.split("/")[0]
    return first[:-3] if first.endswith(".rs") else first


def aggregate_of(rel):
    top = top_module(rel)
    return top if top in AGGREGATES else None


def is_store(rel):
    return aggregate_of(rel) is not None and (rel.endswith("/store.rs"))


def may_import_http(rel):
    # web/ is a face like the aggregates' http modules: the console signs in and answers
    # through the same HTTP plumbing.
    if rel.startswith(("http/", "web/")) or rel in COMPOSITION_ROOT or rel.startswith("bin/"):
        return True
    return aggregate_of(rel) is not None and (rel.endswith("/http.rs") or "/http/" in rel)


def imports(code):
    """The module path (a tuple of segments) of every `crate::` path, with the grouped form
    `use crate::{a, b::c}` expanded."""
    found = set()
    for match in USE_RE.finditer(code):
        found.add(tuple(match.group(1).split("::")))
    for group in re.finditer(r"\bcrate::\{([^}]*)\}", code):
        for item in group.group(1).split(","):
            parts = [p for p in item.strip().split("::") if re.fullmatch(r"[a-z_]+", p)]
            if parts:
                found.add(tuple(parts))
    return found


def check(src):
    findings = []  # (rule, rel, message)
    graph = defaultdict(set)
    upward = 0
    lines_per_module = defaultdict(int)
    sizes = []
    top_modules = {top_module(rel) for rel, _ in rust_files(src)}
    for rel, path in sorted(rust_files(src)):
        code = code_of(path)
        with open(path, encoding="utf-8") as f:
            line_count = sum(1 for _ in f)
        top = top_module(rel)
        lines_per_module[top] += line_count
        sizes.append((line_count, rel))
        if line_count > MAX_LINES:
            findings.append(("size", rel, f"{line_count} lines (at most {MAX_LINES})"))
        agg = aggregate_of(rel)
        # `super::` inside an aggregate's submodule is its own aggregate.
        for path in imports(code):
            module = path[0]
            if module not in top_modules or module == top:
                continue
            if top != "bin":
                graph[top].add(module)
                if LAYER_OF.get(module, -1) > LAYER_OF.get(top, len(LAYERS)):
                    upward += 1
                    findings.append(("layer", rel, f"imports crate::{'::'.join(path)}, a higher layer"))
            if agg and module in AGGREGATES and "store" in path[1:]:
                store_path = "::".join(path[: path.index("store", 1) + 1])
                findings.append(("store", rel, f"imports crate::{store_path}"))
            if module == "http" and not may_import_http(rel):
                findings.append(("http", rel, "imports crate::http"))
        unchecked = sorted(set(RUNTIME_SQL_RE.findall(code)))
        if unchecked:
            findings.append(("runtime", rel, "SQL not checked at compile time: " + ", ".join(unchecked)))
        literals = re.findall(r'"(?:[^"\\]|\\.)*"', code, re.DOTALL)
        if is_store(rel):
            foreign = sorted(
                {
                    m.group(1).lower()
                    for literal in literals
                    for m in WRITE_RE.finditer(literal)
                    if TABLE_OWNER.get(m.group(1).lower(), agg) != agg
                }
            )
            if foreign:
                findings.append(("write", rel, "writes " + ", ".join(foreign)))
        if not is_store(rel) and not any(rel.startswith(p) for p in SQL_ANYWHERE):
            tables = sorted(
                {
                    m.group(1).lower()
                    for literal in re.findall(r'"(?:[^"\\]|\\.)*"', code, re.DOTALL)
                    for m in SQL_RE.finditer(literal)
                    if m.group(1).lower() in TABLE_OWNER
                }
            )
            if tables:
                findings.append(("sql", rel, "SQL on " + ", ".join(tables)))
    for module in sorted(top_modules - set(LAYER_OF)):
        findings.append(("layer", module, "a top-level module in no layer: place it in LAYERS"))
    for cycle in cycles(graph):
        findings.append(("cycle", " <-> ".join(cycle), "top-level modules import each other"))
    return findings, lines_per_module, sizes, upward


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def report(src, quiet=False):
    findings, lines_per_module, sizes, upward = check(src)
    new = [f for f in findings if (f[0], f[1]) not in PENDING]
    seen = {(f[0], f[1]) for f in findings}
    stale = sorted(p for p in PENDING if p not in seen)
    if not quiet:
        print("lines per top-level module:")
        for module, n in sorted(lines_per_module.items(), key=lambda kv: -kv[1]):
            print(f"  {module:<15} {n:>6}")
        print("largest files: " + ", ".join(f"{rel} {n}" for n, rel in sorted(sizes)[::-1][:6]))
        print(f"upward imports (module -> a module of a higher layer): {upward}")
        cyc = [f for f in findings if f[0] == "cycle"]
        print(f"import cycles between top-level modules: {len(cyc)}"
              + "".join(f"\n  {f[1]}" for f in cyc))
        print(f"pending (listed in PENDING, still to move): {len(findings) - len(new)}")
    for rule, rel, message in new:
        print(f"  FAIL [{rule}] {rel}: {message}")
    for rule, rel in stale:
        print(f"  FAIL [{rule}] {rel}: listed in PENDING but no longer breaks the rule; remove it")
    return new, stale


def self_test():
    """Break a copy of src/ once per rule; each break must be reported."""
    breaks = {
        "store": ("leads/ops.rs", "\nfn _broken() { let _ = crate::loans::store::fetch; }\n"),
        "http": ("domain/money.rs", "\nfn _broken() { let _ = crate::http::support::etag; }\n"),
        "sql": ("leads/ops.rs", '\nconst _BROKEN: &str = "select id from loans";\n'),
        "write": ("documents/store.rs", '\nconst _BROKEN: &str = "update loans set status = 1";\n'),
        "cycle": ("config/mod.rs", "\nfn _broken() { let _ = crate::leads::ops::get; }\n"),
        "layer": ("crypto/mod.rs", "\nfn _broken() { let _ = crate::state::AppState::new; }\n"),
        "size": ("domain/mask.rs", "\n" + "// filler\n" * (MAX_LINES + 1)),
        "runtime": ("agents/store.rs", '\nfn _broken() { let _ = sqlx::query("select 1"); }\n'),
    }
    failures = 0
    for rule, (rel, text) in breaks.items():
        with tempfile.TemporaryDirectory() as tmp:
            copy = os.path.join(tmp, "src")
            shutil.copytree(os.path.join(ROOT, "src"), copy)
            with open(os.path.join(copy, rel), "a", encoding="utf-8") as f:
                f.write(text)
            findings, *_ = check(copy)
            hit = [f for f in findings if f[0] == rule and (f[1] == rel or rule == "cycle")
                   and (f[0], f[1]) not in PENDING]
            if hit:
                print(f"  ok   positive control [{rule}]: {hit[0][1]}: {hit[0][2]}")
            else:
                print(f"  FAIL positive control [{rule}]: breaking {rel} was not reported")
                failures += 1
    return failures


def main():
    args = sys.argv[1:]
    src = os.path.join(ROOT, "src")
    run_self_test = "--self-test" in args
    rest = [a for a in args if a != "--self-test"]
    if rest:
        src = rest[0]
    new, stale = report(src)
    failures = len(new) + len(stale)
    if run_self_test:
        failures += self_test()
    if failures:
        print(f"layers: {failures} problem(s)")
        return 1
    print("layers: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
