#!/usr/bin/env python3
"""Check that every metric a Grafana dashboard queries is exported by trigger-relay.

    python grafana/check_dashboard.py grafana/trigger-relay.json http://127.0.0.1:9187/metrics
    python grafana/check_dashboard.py grafana/trigger-relay.json scrape.txt
    python grafana/check_dashboard.py grafana/trigger-relay.json docs/contract.md
    python grafana/check_dashboard.py grafana/trigger-relay.json \
        http://127.0.0.1:9187/metrics http://127.0.0.1:9465/metrics   # daemon + Python worker

Each further argument is a live /metrics URL, a saved scrape (Prometheus text exposition
format), or docs/contract.md (its metrics tables: the daemon's and the Python worker's), so
the dashboard can also be checked before any daemon runs. With several, a metric counts as
exported when any of them exports it (the Python worker's panels read the worker's own
endpoint, TRIGGER_RELAY_WORKER_METRICS_ADDR).

Metric names are taken from the PromQL of every panel target (rows and library-less nested
panels included) and of the Prometheus query variables. A name counts as exported when:
  * a sample with that name is in the scrape, or
  * a `# TYPE` line declares it, with the series a family implies: histogram X gives
    X_bucket, X_sum, X_count; summary X gives X, X_sum, X_count; counter X gives X and
    X_total (OpenMetrics-style TYPE lines name counters without _total).
A bare histogram name (X instead of X_bucket/_sum/_count) is reported: it selects nothing.

A labelled counter or histogram may have no series at all until it is first observed
(the daemon pre-initialises its label values so this does not happen). If a metric is
missing from a live scrape, check that first.

Exit status: 0 when every referenced metric exists, 1 when some are missing (named on
stderr), 2 on usage or input errors. Metrics exported but not used by the dashboard are
listed as information only. Standard library only.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from pathlib import Path

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# PromQL words that look like identifiers but are not metric names.
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "atan2",
    "inf",
    "nan",
    "start",
    "end",
}
# Keywords followed by a parenthesised label list.
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
# Aggregation operators may put their by/without clause first: `sum by (le) (...)`.
AGGREGATIONS = {
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
}

IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
DURATION_TAIL = re.compile(r"(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*")
NAME_MATCHER = re.compile(r"""__name__\s*=\s*(["'`])([A-Za-z_:][A-Za-z0-9_:]*)\1""")


# --------------------------------------------------------------------------- PromQL side


def strip_grafana_variables(expr: str) -> str:
    """Replace Grafana variables ($x, ${x}, ${x:fmt}, [[x]]) with a neutral token."""
    expr = re.sub(r"\$\{[^}]*\}", "1", expr)
    expr = re.sub(r"\[\[[^\]]*\]\]", "1", expr)
    expr = re.sub(r"\$[A-Za-z_][A-Za-z0-9_]*", "1", expr)
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names used in one PromQL expression."""
    expr = strip_grafana_variables(expr)
    names: set[str] = set()
    i, n = 0, len(expr)
    prev_ident = ""
    while i < n:
        c = expr[i]
        if c.isspace():
            i += 1
            continue
        if c == "#":  # comment to end of line
            j = expr.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "\"'`":  # string literal
            j = i + 1
            while j < n and expr[j] != c:
                j += 2 if expr[j] == "\\" and c != "`" else 1
            i = j + 1
            prev_ident = ""
            continue
        if c == "{":  # label matchers; only __name__="x" names a metric
            j = _matching(expr, i, "{", "}")
            names.update(m.group(2) for m in NAME_MATCHER.finditer(expr[i:j]))
            i = j
            prev_ident = ""
            continue
        if c == "[":  # range or subquery duration
            i = _matching(expr, i, "[", "]")
            prev_ident = ""
            continue
        m = NUMBER.match(expr, i)
        if m and (c.isdigit() or c == "."):
            i = m.end()
            d = DURATION_TAIL.match(expr, i)  # 5m, 1h30m after `offset`
            if d:
                i = d.end()
            prev_ident = ""
            continue
        m = IDENT.match(expr, i)
        if m:
            word = m.group(0)
            i = m.end()
            k = i
            while k < n and expr[k].isspace():
                k += 1
            followed_by_paren = k < n and expr[k] == "("
            if word.lower() in AGGREGATIONS and re.match(
                r"(?i)(by|without)\b", expr[k:]
            ):
                prev_ident = word.lower()
                continue
            if word.lower() in LABEL_LIST_KEYWORDS and followed_by_paren:
                i = _matching(
                    expr, k, "(", ")"
                )  # by (le, operation): labels, not metrics
                prev_ident = ""
                continue
            if followed_by_paren or word.lower() in KEYWORDS:
                prev_ident = word.lower()  # function, aggregation or keyword
                continue
            if prev_ident == "offset":
                prev_ident = ""
                continue
            names.add(word)
            prev_ident = ""
            continue
        i += 1
        prev_ident = ""
    return names


def _matching(s: str, start: int, open_c: str, close_c: str) -> int:
    """Index just past the bracket closing the one at s[start], skipping strings."""
    depth, i, n = 0, start, len(s)
    while i < n:
        c = s[i]
        if c in "\"'`":
            j = i + 1
            while j < n and s[j] != c:
                j += 2 if s[j] == "\\" and c != "`" else 1
            i = j + 1
            continue
        if c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def variable_query_expr(query: str) -> str | None:
    """PromQL inside a Prometheus variable query, or None when it names no metric."""
    query = query.strip()
    m = re.fullmatch(r"label_values\s*\((.*)\)", query, re.DOTALL)
    if m:
        args = m.group(1)
        depth, split = 0, None
        for idx, ch in enumerate(args):  # last top-level comma separates the label
            if ch in "({[":
                depth += 1
            elif ch in ")}]":
                depth -= 1
            elif ch == "," and depth == 0:
                split = idx
        return args[:split] if split is not None else None
    m = re.fullmatch(r"query_result\s*\((.*)\)", query, re.DOTALL)
    if m:
        return m.group(1)
    if re.fullmatch(r"(label_names|metrics)\s*\(.*\)", query, re.DOTALL):
        return None
    return query or None


def dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(where, expr) for every PromQL expression in the dashboard."""
    found: list[tuple[str, str]] = []

    def walk_panels(panels: list, prefix: str) -> None:
        for panel in panels or []:
            title = panel.get("title") or f"panel {panel.get('id')}"
            for target in panel.get("targets") or []:
                expr = target.get("expr")
                if expr:
                    found.append(
                        (f"{prefix}{title} [{target.get('refId', '?')}]", expr)
                    )
            walk_panels(panel.get("panels"), f"{prefix}{title} / ")

    walk_panels(dashboard.get("panels"), "")
    for var in (dashboard.get("templating") or {}).get("list") or []:
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str):
            expr = variable_query_expr(query)
            if expr:
                found.append((f"variable ${var.get('name')}", expr))
    return found


# --------------------------------------------------------------------------- exporter side


def read_source(source: str) -> str:
    if re.match(r"https?://", source):
        request = urllib.request.Request(source, headers={"Accept": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read().decode("utf-8", "replace")
    return Path(source).read_text(encoding="utf-8")


def exported_from_scrape(text: str) -> tuple[set[str], set[str]]:
    """(series names available, family names) from text exposition format."""
    available: set[str] = set()
    families: set[str] = set()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                name, kind = parts[2], parts[3].strip().lower()
                families.add(name)
                available.update(series_of_family(name, kind))
            continue
        m = IDENT.match(line)
        if m:
            available.add(m.group(0))
    return available, families


def exported_from_contract(text: str) -> tuple[set[str], set[str]]:
    """(series names available, family names) from the Metrics table of contract.md."""
    available: set[str] = set()
    families: set[str] = set()
    in_metrics = False
    for line in text.splitlines():
        if line.startswith("#"):
            in_metrics = "metric" in line.lower()
            continue
        if not in_metrics or not line.startswith("|"):
            continue
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", cells[0]):
            continue
        if cells[0] == "name":  # header row
            continue
        families.add(cells[0])
        available.update(series_of_family(cells[0], cells[1].lower()))
    if not families:
        raise ValueError(
            "no metrics table found (a '## Metrics' section with | name | type |)"
        )
    return available, families


def series_of_family(name: str, kind: str) -> set[str]:
    if kind == "histogram":
        return {name + s for s in HISTOGRAM_SUFFIXES}
    if kind == "summary":
        return {name, name + "_sum", name + "_count"}
    if kind == "counter" and not name.endswith("_total"):
        return {name, name + "_total"}
    return {name}


def family_of(series: str, families: set[str]) -> str:
    for suffix in HISTOGRAM_SUFFIXES + ("_total",):
        if series.endswith(suffix) and series[: -len(suffix)] in families:
            return series[: -len(suffix)]
    return series


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    dashboard_path = argv[1]
    available: set[str] = set()
    families: set[str] = set()
    try:
        dashboard = json.loads(Path(dashboard_path).read_text(encoding="utf-8"))
        for source in argv[2:]:
            text = read_source(source)
            if source.endswith(".md"):
                found = exported_from_contract(text)
            else:
                found = exported_from_scrape(text)
            available |= found[0]
            families |= found[1]
    except (OSError, ValueError) as exc:  # URLError is an OSError
        print(f"error: {exc}", file=sys.stderr)
        return 2

    exprs = dashboard_exprs(dashboard)
    if not exprs:
        print(
            f"error: no PromQL expressions found in {dashboard_path}", file=sys.stderr
        )
        return 2

    used: dict[str, list[str]] = {}
    for where, expr in exprs:
        for name in metric_names(expr):
            used.setdefault(name, []).append(where)

    missing = sorted(name for name in used if name not in available)
    for name in missing:
        hint = ""
        if name in families:
            hint = " (a histogram/summary family: query _bucket, _sum or _count)"
        print(
            f"MISSING {name}{hint}: used by " + "; ".join(sorted(set(used[name]))),
            file=sys.stderr,
        )

    used_families = {family_of(name, families) for name in used}
    unused = sorted(f for f in families if f not in used_families)
    print(
        f"{len(exprs)} expressions, {len(used)} metric names, "
        f"{len(used) - len(missing)} found, {len(missing)} missing"
    )
    if unused:
        print("exported but not on the dashboard: " + ", ".join(unused))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
