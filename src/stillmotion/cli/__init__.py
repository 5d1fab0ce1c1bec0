"""Command line: `stillmotion` (stdio server), `serve --http`, `demo`, `models`, `jobs`, `run`, `worker`, `gc`.

stdout belongs to the MCP protocol when serving stdio; everything else logs to stderr. Commands
import what they need when they run (the MCP SDK and the media stack take seconds of CPU to
import), so `models`, `--help` and `run --help` answer at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .. import __version__

DESCRIPTION = """MCP server that animates still images into MP4s.

Run with no command, `stillmotion` is the stdio MCP server: an MCP client (Claude Desktop,
Claude Code, Cursor, VS Code) starts it and talks to it on stdin/stdout. Started by hand in a
terminal it waits for such a client; Ctrl-C stops it. To try it yourself: `stillmotion demo`,
or `stillmotion run TOOL '{json}'`."""

TTY_NOTICE = (
    "stillmotion: this is the MCP stdio server; it waits for an MCP client (Claude Desktop, Claude Code, "
    "Cursor, VS Code) on stdin. Ctrl-C stops it. To try it by hand: `stillmotion demo`, "
    "`stillmotion run --help`; `stillmotion --help` lists every command."
)


def _setup_logging(verbose: bool = False) -> None:
    from ..ops.logs import setup

    setup(verbose)


def main(argv: list[str] | None = None) -> int:
    """The command line; a reader that goes away (`| head`) ends it quietly with status 0."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C in a command: no traceback
        return 130
    except BaseException as exc:
        if not _only_broken_pipes(exc):
            raise
        # stdout's reader went away: nothing more can be shown; exit without the flush error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _only_broken_pipes(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_broken_pipes(e) for e in exc.exceptions)
    return isinstance(exc, BrokenPipeError)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stillmotion", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"stillmotion {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (stderr)")
    sub = parser.add_subparsers(dest="command", title="commands (none: the stdio MCP server, for MCP clients)")
    serve = sub.add_parser("serve", help="serve MCP (stdio by default, or streamable HTTP)")
    serve.add_argument("--http", action="store_true", help="streamable HTTP at /mcp instead of stdio")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    demo = sub.add_parser("demo", help="render five preview videos offline and check that each decodes")
    demo.add_argument("--out", default="stillmotion-demo", help="folder for the videos (default ./stillmotion-demo)")
    sub.add_parser("models", help="the model catalog")
    jobs = sub.add_parser("jobs", help="recent jobs")
    jobs.add_argument("--status", default=None)
    jobs.add_argument("--limit", type=int, default=20)
    spend = sub.add_parser("spend", help="committed and estimated spend by UTC day, model and route; the budget left")
    spend.add_argument("--json", action="store_true", help="print the stillmotion://spend JSON instead of a table")
    worker = sub.add_parser("worker", help="run the job runner alone, in the foreground (systemd, a container)")
    worker.add_argument("--background", action="store_true", help=argparse.SUPPRESS)
    run = sub.add_parser(
        "run",
        help="call any tool from a shell",
        description="Call one of the server's tools with a JSON object of arguments.",
        epilog=_tools_epilog() if _asks_run_help(sys.argv[1:] if argv is None else argv) else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("tool", help="a tool name (listed below)")
    run.add_argument("arguments", nargs="?", default="{}", help="JSON object of tool arguments")
    run.add_argument("--wait", action="store_true", help="follow the job to its end with a progress bar")
    gc = sub.add_parser(
        "gc",
        help="apply STILLMOTION_RETENTION_DAYS and STILLMOTION_MAX_OUTPUT_GB now; print what was deleted",
        description="Delete finished jobs older than STILLMOTION_RETENTION_DAYS (files and rows) and, while the "
        "outputs are over STILLMOTION_MAX_OUTPUT_GB, the oldest finished jobs' files (rows stay, files_deleted).",
    )
    gc.add_argument("--dry-run", action="store_true", help="print what would be deleted; delete nothing")
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if args.command in ("demo", "run", "models", "jobs", "spend", "gc") and not args.verbose:
        logging.getLogger("stillmotion").setLevel(logging.WARNING)  # a command's own output stays readable

    if args.command in (None, "serve"):
        return _serve(getattr(args, "http", False), getattr(args, "host", "127.0.0.1"), getattr(args, "port", 8765))
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(Path(args.out))
    if args.command == "models":
        return _models()
    if args.command == "jobs":
        return _jobs(args.status, args.limit)
    if args.command == "spend":
        return _spend(args.json)
    if args.command == "run":
        import anyio

        return anyio.run(_run_tool, args.tool, args.arguments, args.wait)
    if args.command == "gc":
        return _gc(args.dry_run)
    if args.command == "worker":
        return _worker(args.background, args.verbose)
    parser.print_help(sys.stderr)
    return 2


def _serve(http: bool, host: str, port: int) -> int:
    from ..ops.startup import StartupError, bind, check_store
    from ..settings import Settings

    try:
        settings = Settings.from_env(transport="http" if http else "stdio")
        # the usual first-hour mistakes, each in one line within seconds (not a traceback)
        check_store(settings)
        sock = bind(host, port) if http else None
    except (ValueError, StartupError) as exc:
        print(f"stillmotion: {exc}", file=sys.stderr)
        return 2
    if not http:
        from ..server import build_server

        server = build_server(settings)
        _hand_over_on_signal()
        if sys.stdin.isatty():
            print(TTY_NOTICE, file=sys.stderr, flush=True)
        server.run()
        return 0
    from ..http.app import serve_http

    return serve_http(settings, host, port, sock)


def _asks_run_help(argv: list[str]) -> bool:
    """Build the tool list for `run --help` only."""
    return "run" in argv and any(a in ("-h", "--help") for a in argv)


TOOL_INDEX: tuple[tuple[str, str], ...] = (
    ("animate_image", "Animate a still image: the image becomes the first frame and the prompt describes the motion"),
    ("interpolate_frames", "Make a clip that starts on start_image and ends on end_image (first/last-frame)"),
    ("camera_move", "Move the camera over the still scene: one axis in [-10, 10] (type simple) or a preset type"),
    ("motion_brush", "Move 1-6 masked regions along trajectories (input-image pixels, origin BOTTOM-LEFT, 2-77 points "
                     "per 5 s) while static_mask holds still"),
    ("join_clips", "Join clips (job ids or videos) into one MP4 (free, local; the first clip's size and fps)"),
    ("extend_video", "The video then its continuation from its last frame, as one MP4 (models and options as animate_image)"),
    ("check_job", "Status of a job"),
    ("list_jobs", "Recent jobs, newest first, optionally filtered by status"),
    ("cancel_job", "Stop a job"),
    ("delete_job", "Delete a finished job: its files, inputs and record"),
    ("list_models", "The models: tools, durations, modes, whether a key is set"),
)
"""Every tool with the first sentence of its description, for `run --help` without importing the
server (seconds of CPU). tests/test_operator_cli.py checks it against the real tool list."""


def _tools_epilog() -> str:
    """`run --help`: every tool with the first sentence of its description, and examples."""
    width = max(len(name) for name, _ in TOOL_INDEX)
    lines = ["tools:"]
    for name, first in TOOL_INDEX:
        lines.append(f"  {name.ljust(width)}  {first}.")
    lines += [
        "",
        "examples:",
        "  stillmotion run animate_image '{\"image\": \"photo.jpg\", \"prompt\": \"slow zoom in\"}' --wait",
        "  stillmotion run check_job '{\"job_id\": \"job_...\"}' --wait",
        "  stillmotion run list_models '{\"model\": \"klingai/kling-v2.6-i2v\"}'",
    ]
    return "\n".join(lines)


def _hand_over_on_signal() -> None:
    """SIGTERM/SIGHUP/SIGINT (Ctrl-C) to a stdio server: release its jobs, start the background worker, exit.

    Done right in the handler: the stdio transport reads stdin on a thread that no cancellation
    can interrupt, so an orderly shutdown would wait for the client's next line forever."""

    def handler(signum: int, frame: object) -> None:
        from ..service import ACTIVE

        logging.getLogger("stillmotion").info("signal %d: handing unfinished jobs over", signum)
        for svc in list(ACTIVE):
            try:
                svc.stop()
                svc.close()
            except Exception:
                logging.getLogger("stillmotion").exception("hand-over failed")
        logging.shutdown()
        os._exit(0)

    for name in ("SIGTERM", "SIGHUP", "SIGINT"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, handler)


def _worker(background: bool, verbose: bool) -> int:
    from ..jobs.worker import log_to_file, run_worker
    from ..ops.startup import StartupError, check_store
    from ..settings import Settings

    try:
        settings = Settings.from_env(transport="inproc")
        check_store(settings)
    except (ValueError, StartupError) as exc:
        print(f"stillmotion: {exc}", file=sys.stderr)
        return 2
    if background:
        log_to_file(settings.home, verbose, max_bytes=settings.worker_log_bytes)
    else:
        logging.getLogger("stillmotion").setLevel(logging.DEBUG if verbose else logging.INFO)
    import anyio

    return anyio.run(lambda: run_worker(settings, idle_exit=background))


def _models() -> int:
    from ..catalog import MODELS
    from ..plan.routes import SHORT_TOOL, enabled_by, route_now, tools_of

    settings = _settings_or_exit()
    rows: list[tuple[str, ...]] = [("model", "tools", "durations", "modes", "route now", "enabled by")]
    for m in MODELS.values():
        route, _ = route_now(m, settings)
        tools = ",".join(SHORT_TOOL[t] for t in tools_of(m, settings))
        rows.append(
            (m.id, tools, m.describe_durations(), "|".join(m.modes) or "-", route or "not set up", enabled_by(m))
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print()
    print("join_clips needs no model: it joins 2-20 finished clips (job ids or videos) on this machine, "
          "optionally crossfaded; free and offline.")
    return 0


def _jobs(status: str | None, limit: int) -> int:
    from ..jobs.backends import open_for_settings
    from ..jobs.ownership import owner_is_alive
    from ..jobs.worker import META_KEY, worker_alive
    from ..settings import Settings

    settings = Settings.from_env()
    url = settings.database_url.reveal() if settings.database_url is not None else None
    if url is None and not settings.db_path.exists():
        print("no jobs yet")
        return 0
    store = open_for_settings(settings, serving=False)  # (PostgreSQL: the team's store, every replica's jobs)
    try:
        rows = store.recent(status=status, limit=limit)
        worker_id = store.meta_get(META_KEY)
    finally:
        store.close()
    if worker_alive(settings.home):
        print(f"background worker: alive ({worker_id or 'id unknown'})")
    else:
        print("background worker: not running")
    if not rows:
        print("no jobs")
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at))
        path = (r.result or {}).get("video", {}).get("path", "") if r.status == "succeeded" else ""
        err = (r.error or {}).get("kind", "")
        line = f"{r.id}  {when}  {r.user_id:<12} {r.status:<11} {r.tool:<18} {r.model:<32} {err or path}"
        if not r.terminal:
            alive = owner_is_alive(r.owner)
            state = {True: "alive", False: "gone", None: "another host"}[alive] if r.owner else ""
            who = f"owner {r.owner} ({state})" if r.owner else "owner none (waiting for a process)"
            line += f"  {who}" + (f"  [{r.status_detail}]" if r.status_detail else "")
        print(line)
    return 0


def _settings_or_exit() -> Any:
    from ..settings import Settings

    try:
        return Settings.from_env()
    except ValueError as exc:
        print(f"stillmotion: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _money(x: float | None) -> str:
    return "-" if x is None else f"${x:,.2f}"


def _spend_users(report: dict[str, Any]) -> None:
    """Spend per user in the period (issue #23), with what is left of each one's own budget."""
    users = report.get("users") or []
    if not users:
        return
    own = report.get("user_budget_usd")
    print("Per user this period" + (f" (each may spend {_money(own)}):" if own is not None else ":"))
    head = ("user", "jobs", "committed", "in flight", "left")
    rows = [head] + [
        (u["user"], str(u["jobs"]), _money(u["committed_usd"]), _money(u["reserved_usd"]), _money(u["left_usd"]))
        for u in users
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))


def _spend(as_json: bool) -> int:
    from ..tools.cost import read_spend

    settings = _settings_or_exit()
    report = read_spend(settings)
    if as_json:
        print(json.dumps(report, indent=2), flush=True)
        return 0
    b = report["budget"]
    if b["budget_usd"] is None:
        print(f"No budget (STILLMOTION_BUDGET_USD unset). This {b['period']} since {b['period_start']}: "
              f"{_money(b['committed_usd'])} committed, {_money(b['reserved_usd'])} in flight.")
    else:
        print(f"Budget {_money(b['budget_usd'])} per {b['period']} (UTC, since {b['period_start']}): "
              f"{_money(b['committed_usd'])} committed, {_money(b['reserved_usd'])} in flight, "
              f"{_money(b['left_usd'])} left.")
    if report["confirm_above_usd"] is not None:
        print(f"Jobs above {_money(report['confirm_above_usd'])} need confirmation.")
    _spend_users(report)
    if not report["rows"]:
        print("no jobs yet")
        return 0
    head = ("day (UTC)", "model", "route", "jobs", "committed", "actual", "estimated", "in flight", "no price")
    rows = [head] + [
        (r["day"], r["model"], r["route"], str(r["jobs"]), _money(r["committed_usd"]), _money(r["actual_usd"]),
         _money(r["estimated_usd"]), _money(r["in_flight_usd"]), str(r["unknown_price_jobs"] or ""))
        for r in report["rows"]
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    print("committed: jobs that reached the provider (its reported cost, else the estimate); "
          "estimated: the estimates of those and of jobs in flight.")
    return 0


async def _run_tool(tool: str, raw: str, wait: bool) -> int:
    from mcp import Client

    from ..server import build_server

    try:
        arguments: dict[str, Any] = json.loads(raw)
    except json.JSONDecodeError as exc:
        print(f"arguments must be a JSON object: {exc}", file=sys.stderr)
        return 2
    server = build_server(shell=True)  # next steps name shell commands
    async with Client(server) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        if tool not in names:
            from ..plan.validation import did_you_mean

            near = did_you_mean(tool, names, cutoff=0.6)
            hint = f"; did you mean '{near}'?" if near else "."
            print(f"stillmotion: unknown tool {tool!r}{hint} Tools: {', '.join(names)}.", file=sys.stderr)
            return 2
        result = await client.call_tool(tool, arguments)
        structured = result.structured_content
        if result.is_error or not wait or not structured or "job_id" not in structured:
            _print_result(result)
            return 1 if result.is_error else 0
        job_id = structured["job_id"]

        async def bar(progress: float, total: float | None, message: str | None) -> None:
            width = 30
            frac = progress / (total or 1.0)
            filled = int(frac * width)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {frac:5.0%} {message or ''}   ")
            sys.stderr.flush()

        while True:
            result = await client.call_tool("check_job", {"job_id": job_id, "wait_seconds": 30}, progress_callback=bar)
            st = (result.structured_content or {}).get("status")
            if result.is_error or st in ("succeeded", "failed", "cancelled"):
                break
        sys.stderr.write("\n")
        _print_result(result)
        return 0 if st == "succeeded" else 1


def _print_result(result: Any) -> None:
    """The structured result on stdout, once; the text blocks (the same facts for a model) only
    when there is no structured result, or on stderr for an error."""
    if result.structured_content:
        print(json.dumps(result.structured_content, indent=2), flush=True)
    if result.structured_content and not result.is_error:
        return
    for block in result.content:
        if getattr(block, "type", None) == "text":
            print(block.text, file=sys.stderr if result.is_error or result.structured_content else sys.stdout)


def _gc(dry_run: bool) -> int:
    import anyio

    from ..jobs.backends import open_store
    from ..jobs.gc import collect, human_bytes

    settings = _settings_or_exit()
    if settings.retention_days is None and settings.max_output_bytes is None:
        print("nothing to do: set STILLMOTION_RETENTION_DAYS (delete finished jobs older than that many days) "
              "and/or STILLMOTION_MAX_OUTPUT_GB (a cap on the output folder)")
        return 0
    url = settings.database_url.reveal() if settings.database_url is not None else None
    store = open_store(settings.db_path, url)

    async def go() -> Any:
        import httpx

        from ..jobs.async_store import AsyncJobStore

        db = AsyncJobStore(store)
        try:
            async with httpx.AsyncClient() as client:
                return await collect(db, settings, client, dry_run=dry_run)
        finally:
            await db.aclose()

    report = anyio.run(go)
    verb = "would delete" if dry_run else "deleted"
    for d in report.items:
        when = time.strftime("%Y-%m-%d", time.localtime(d.created_at)) if d.created_at else "-"
        what = {"deleted": "job and files", "files deleted": "files only (row kept)",
                "orphan folder deleted": "folder without a job"}[d.action]
        print(f"{verb} {d.job_id}  {d.status:<9}  created {when}  {what:<22}  {human_bytes(d.bytes):>9}  ({d.reason})")
    freed = human_bytes(report.freed_bytes)
    jobs = len(report.items)
    if dry_run:
        print(f"dry run: {jobs} job(s) would be cleaned, freeing {freed}; nothing was deleted")
    else:
        print(f"{jobs} job(s) cleaned, {freed} freed")
    if report.cap_bytes is not None:
        left = max(0, report.output_bytes_before - sum(d.bytes for d in report.items if d.action == "files deleted"))
        print(f"outputs: {human_bytes(left)} of the {human_bytes(report.cap_bytes)} cap"
              + (" (after this run)" if not dry_run else " (if applied)"))
    return 0


__all__ = ["main"]
