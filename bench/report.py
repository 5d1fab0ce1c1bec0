"""Plain-text table for the terminal and the markdown of bench/RESULTS.md."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .common import Row, Section, fmt

HERE = Path(__file__).resolve().parent


def verdict(row: Row) -> str:
    if row.passed is None:
        return ""
    return "PASS" if row.passed else "MISS"


def _cells(row: Row) -> list[str]:
    s = row.stat
    single = s.n <= 1
    return [
        row.metric,
        fmt(s.median, row.unit),
        "" if single else fmt(s.min, row.unit),
        "" if single else fmt(s.max, row.unit),
        str(s.n),
        row.unit,
        row.target,
        verdict(row),
    ]


HEAD = ["metric", "median", "min", "max", "n", "unit", "target", "result"]


def text_table(sections: list[Section]) -> str:
    out: list[str] = []
    for sec in sections:
        rows = [HEAD] + [_cells(r) for r in sec.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(HEAD))]
        out.append("")
        out.append(sec.title)
        out.append("-" * len(sec.title))
        for k, r in enumerate(rows):
            out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
            if k == 0:
                out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _md_table(rows: list[Row], with_notes: bool = True) -> list[str]:
    head = [*HEAD, "note"] if with_notes else HEAD
    numeric = {"median", "min", "max", "n"}
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if h in numeric else "---" for h in head) + "|"]
    for r in rows:
        cells = _cells(r)
        if cells[-1]:
            cells[-1] = f"**{cells[-1]}**"
        if with_notes:
            cells.append(r.note)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def _before_after(rows: list[Row], baseline: dict[str, Any] | None) -> list[str]:
    if not baseline:
        return []
    before = {r["key"]: Row.from_json(r) for r in baseline.get("rows", []) if r.get("key")}
    lines = [
        f"Automatic comparison with `{baseline.get('_path', 'baseline')}` (the same bench, run on "
        f"{baseline.get('date', '?')}, {baseline.get('mode', '?')} mode, before the changes below), medians:",
        "",
        "| metric | unit | before | after | after / before | target | before | after |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    n = 0
    for r in rows:
        b = before.get(r.key)
        if b is None:
            continue
        ratio = r.stat.median / b.stat.median if b.stat.median and not math.isnan(b.stat.median) else math.nan
        lines.append(
            f"| {r.metric} | {r.unit} | {fmt(b.stat.median, r.unit)} | {fmt(r.stat.median, r.unit)} | "
            f"{'-' if math.isnan(ratio) else f'{ratio:.2f}'} | {r.target} | {verdict(b)} | {verdict(r)} |"
        )
        n += 1
    return lines if n else []


def markdown(
    *,
    sections: list[Section],
    machine: dict[str, str],
    versions: dict[str, str],
    date: str,
    mode: str,
    elapsed_s: float,
    command: str,
    baseline: dict[str, Any] | None,
    failures: list[str],
) -> str:
    md: list[str] = [
        "# stillmotion benchmarks",
        "",
        f"Written by `{command}` on {date} ({mode} run, {elapsed_s / 60:.1f} min). Every figure below was measured "
        "in this run; ratios compare medians from this same run. A MISS is a result, explained below, not a "
        "reason to change a target.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    md += [f"| {k} | {v} |" for k, v in machine.items()]
    md += ["", "## Versions", "", "| package | version |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in versions.items()]
    from .toollist import tool_list_markdown

    md += ["", *tool_list_markdown()]
    all_rows = [r for s in sections for r in s.rows]
    targeted = [r for r in all_rows if r.passed is not None]
    md += [
        "",
        "## Targets at a glance",
        "",
        f"{sum(1 for r in targeted if r.passed)} of {len(targeted)} targets met.",
        "",
        "| section | metric | median | target | result |",
        "|---|---|---:|---|---|",
    ]
    for r in targeted:
        md.append(f"| {r.section.split('.')[0]} | {r.metric} | {fmt(r.stat.median, r.unit)} {r.unit} | {r.target} | **{verdict(r)}** |")
    if failures:
        md += ["", "Sections that failed to run:", ""] + [f"- {f}" for f in failures]
    for sec in sections:
        md += ["", f"## {sec.title}", ""]
        md += _md_table(sec.rows)
        for note in sec.notes:
            md += ["", note]
        for block in sec.extra_md:
            md += ["", block]
    explain = HERE / "explanations.md"
    if explain.exists():
        md += ["", explain.read_text().strip()]
    md += ["", "## What we changed (before / after)", ""]
    changes = HERE / "changes.md"
    if changes.exists():
        md += [changes.read_text().strip(), ""]
    md += _before_after(all_rows, baseline)
    md += [
        "",
        "## How to run",
        "",
        "```",
        "pip install -e '.[bench]'      # imageio-ffmpeg (ffmpeg CLI for the comparison) and psutil",
        "python -m bench                 # full run (3-6 min on 2 cores); or: python bench/run.py",
        "python -m bench --quick         # fewer repetitions, 100 jobs instead of 500 (~2 min)",
        "python -m bench --sections 2    # one section; --help for the rest",
        "```",
        "",
    ]
    return "\n".join(md)
