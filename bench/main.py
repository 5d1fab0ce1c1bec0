"""Entry point of the benchmarks: runs the sections, prints a table, writes bench/RESULTS.md."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from .common import ROOT, Row, Section, machine_info, now_stamp, versions
from .report import markdown, text_table

SECTIONS: dict[str, str] = {
    "1": "engine", "2": "overhead", "3": "download", "4": "many_processes", "5": "team", "6": "waiters", "7": "join",
    "9": "burst", "10": "nothing_lost", "11": "refusals",
}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _runner(name: str) -> Callable[..., Section]:
    if name == "engine":
        from . import engine

        return engine.run
    if name == "overhead":
        from . import overhead

        return overhead.run
    if name == "many_processes":
        from . import many_processes

        return many_processes.run
    if name == "team":
        from . import team

        return team.run
    if name == "waiters":
        from . import waiters

        return waiters.run
    if name == "join":
        from . import join

        return join.run
    if name == "burst":
        from . import burst

        return burst.run
    if name == "refusals":
        from . import refusals

        return refusals.run
    if name == "nothing_lost":
        from . import burst

        return burst.run_nothing_lost
    from . import download

    return download.run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, 100 jobs instead of 500 (~4 min)")
    ap.add_argument("--sections", default="1,2,3,4",
                    help="comma-separated: 1 engine, 2 server overhead, 3 download, 4 two servers on one home, 5 team server (PostgreSQL replicas; on request), "
                    "6 agents waiting in check_job (on request), 7 join_clips (on request), 9 memory under a burst (on request), 10 four bursts of 500 xAI jobs, nothing lost (issue #21; on request), "
                    "11 refusals of hostile inputs and list_models meanwhile (issue #25; on request)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md", help="markdown report to write")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "results.json", help="raw results")
    ap.add_argument("--baseline", type=Path, default=ROOT / "bench" / "baseline-before.json",
                    help="raw results of an earlier run, shown as 'before' in the report (if the file exists)")
    ap.add_argument("--no-report", action="store_true", help="print the table only; write no markdown")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--rewrite", action="store_true",
                    help="measure nothing: write the markdown again from the raw results of the last run (--json)")
    args = ap.parse_args(argv)
    if args.rewrite:
        return _rewrite(args)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # tests.fakes and tests.render.measure

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="stillmotion-bench-"))
    sections: list[Section] = []
    failures: list[str] = []
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    try:
        for key in wanted:
            name = SECTIONS[key]
            (tmp / name).mkdir(parents=True, exist_ok=True)
            try:
                sections.append(_runner(name)(tmp / name, quick=args.quick, log=_log))
            except Exception as exc:
                traceback.print_exc()
                failures.append(f"section {key} ({name}): {type(exc).__name__}: {exc}")
    finally:
        if args.keep:
            _log(f"scratch kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - t0

    print(text_table(sections))
    for f in failures:
        print(f"FAILED: {f}")
    print(f"\n{elapsed / 60:.1f} min")

    date = now_stamp()
    mode = "quick" if args.quick else "full"
    cmd = "python -m bench" + (" --quick" if args.quick else "") + (
        f" --sections {args.sections}" if args.sections != "1,2,3,4" else "")
    raw = {
        "date": date,
        "mode": mode,
        "command": cmd,
        "failures": failures,
        "elapsed_s": elapsed,
        "rows": [r.to_json() for s in sections for r in s.rows],
        "sections": [asdict(s) for s in sections],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(raw, indent=1))
    if not args.no_report:
        _write_markdown(args, sections, date, mode, elapsed, cmd, failures)
    return 1 if failures else 0


def _write_markdown(
    args: argparse.Namespace, sections: list[Section], date: str, mode: str, elapsed: float, cmd: str,
    failures: list[str],
) -> None:
    baseline = None
    if args.baseline.exists():
        baseline = json.loads(args.baseline.read_text())
        baseline["_path"] = args.baseline.relative_to(ROOT) if args.baseline.is_relative_to(ROOT) else args.baseline
    args.out.write_text(
        markdown(
            sections=sections, machine=machine_info(), versions=versions(), date=date, mode=mode,
            elapsed_s=elapsed, command=cmd, baseline=baseline, failures=failures,
        )
    )
    _log(f"wrote {args.out}")


def _rewrite(args: argparse.Namespace) -> int:
    raw = json.loads(args.json.read_text())
    sections = []
    for d in raw["sections"]:
        sec = Section(d["title"], notes=d["notes"], extra_md=d["extra_md"])
        sec.rows = [Row.from_json(r) for r in d["rows"]]
        sections.append(sec)
    cmd = raw.get("command", "python -m bench" + (" --quick" if raw["mode"] == "quick" else ""))
    _write_markdown(args, sections, raw["date"], raw["mode"], raw["elapsed_s"], cmd, raw.get("failures", []))
    return 0
