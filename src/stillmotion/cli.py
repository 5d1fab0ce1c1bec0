"""Command line: `stillmotion` (stdio server), `serve --http`, `demo`, `models`, `jobs`, `run`, `worker`.

stdout belongs to the MCP protocol when serving stdio; everything else logs to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import anyio

from . import __version__


def _setup_logging(verbose: bool = False) -> None:
    from .scrub import install_log_scrubber

    install_log_scrubber()  # no credential in any log line, whichever logger writes it
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore", "mcp", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stillmotion", description="MCP server that animates still images into MP4s.")
    parser.add_argument("--version", action="version", version=f"stillmotion {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (stderr)")
    sub = parser.add_subparsers(dest="command")
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
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if args.command in ("demo", "run", "models", "jobs", "spend") and not args.verbose:
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
        return anyio.run(_run_tool, args.tool, args.arguments, args.wait)
    if args.command == "worker":
        return _worker(args.background, args.verbose)
    parser.print_help(sys.stderr)
    return 2


def _serve(http: bool, host: str, port: int) -> int:
    from .server import build_server
    from .settings import Settings

    try:
        settings = Settings.from_env(transport="http" if http else "stdio")
    except ValueError as exc:  # a bad setting (e.g. the STILLMOTION_PRICES file) stops start-up, clearly
        print(f"stillmotion: {exc}", file=sys.stderr)
        return 2
    if not http:
        server = build_server(settings)
        _hand_over_on_signal()
        server.run()
        return 0
    from .http import serve_http

    return serve_http(settings, host, port)


def _asks_run_help(argv: list[str]) -> bool:
    """Build the tool list for `run --help` only (it imports the server: not for every command)."""
    return "run" in argv and any(a in ("-h", "--help") for a in argv)


def _tools_epilog() -> str:
    """`run --help`: every tool with the first sentence of its description, and examples."""
    from .server import tool_specs
    from .settings import Settings

    try:
        specs = tool_specs(Settings.from_env())
    except Exception as exc:  # a broken environment must not break --help
        return f"(tools unavailable: {exc})"
    width = max(len(s.name) for s in specs)
    lines = ["tools:"]
    for spec in specs:
        first = spec.description.split(". ")[0].rstrip(".")
        lines.append(f"  {spec.name.ljust(width)}  {first}.")
    lines += [
        "",
        "examples:",
        "  stillmotion run animate_image '{\"image\": \"photo.jpg\", \"prompt\": \"slow zoom in\"}' --wait",
        "  stillmotion run check_job '{\"job_id\": \"job_...\"}' --wait",
        "  stillmotion run list_models '{\"model\": \"klingai/kling-v2.6-i2v\"}'",
    ]
    return "\n".join(lines)


def _hand_over_on_signal() -> None:
    """SIGTERM/SIGHUP to a stdio server: release its jobs, start the background worker, exit.

    Done right in the handler: the stdio transport reads stdin on a thread that no cancellation
    can interrupt, so an orderly shutdown would wait for the client's next line forever."""

    def handler(signum: int, frame: object) -> None:
        from .service import ACTIVE

        logging.getLogger("stillmotion").info("signal %d: handing unfinished jobs over", signum)
        for svc in list(ACTIVE):
            try:
                svc.stop()
                svc.close()
            except Exception:
                logging.getLogger("stillmotion").exception("hand-over failed")
        logging.shutdown()
        os._exit(0)

    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, handler)


def _worker(background: bool, verbose: bool) -> int:
    from .jobs.worker import log_to_file, run_worker
    from .settings import Settings

    settings = Settings.from_env(transport="inproc")
    if background:
        log_to_file(settings.home, verbose)
    else:
        logging.getLogger("stillmotion").setLevel(logging.DEBUG if verbose else logging.INFO)
    return anyio.run(lambda: run_worker(settings, idle_exit=background))


def _models() -> int:
    from .catalog import MODELS
    from .settings import Settings
    from .tools.models import SHORT_TOOL, enabled_by, route_now, tools_of

    settings = Settings.from_env()
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
    return 0


def _jobs(status: str | None, limit: int) -> int:
    from .jobs.backends import open_for_settings
    from .jobs.ownership import owner_is_alive
    from .jobs.worker import META_KEY, worker_alive
    from .settings import Settings

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
        line = f"{r.id}  {when}  {r.status:<11} {r.tool:<18} {r.model:<32} {err or path}"
        if not r.terminal:
            alive = owner_is_alive(r.owner)
            state = {True: "alive", False: "gone", None: "another host"}[alive] if r.owner else ""
            who = f"owner {r.owner} ({state})" if r.owner else "owner none (waiting for a process)"
            line += f"  {who}" + (f"  [{r.status_detail}]" if r.status_detail else "")
        print(line)
    return 0


def _settings_or_exit() -> Any:
    from .settings import Settings

    try:
        return Settings.from_env()
    except ValueError as exc:
        print(f"stillmotion: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _money(x: float | None) -> str:
    return "-" if x is None else f"${x:,.2f}"


def _spend(as_json: bool) -> int:
    from .tools.cost import read_spend

    settings = _settings_or_exit()
    report = read_spend(settings)
    if as_json:
        print(json.dumps(report, indent=2))
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

    from .server import build_server

    try:
        arguments: dict[str, Any] = json.loads(raw)
    except json.JSONDecodeError as exc:
        print(f"arguments must be a JSON object: {exc}", file=sys.stderr)
        return 2
    server = build_server(shell=True)  # next steps name shell commands
    async with Client(server) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        if tool not in names:
            from .validation import did_you_mean

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
    if result.structured_content:
        print(json.dumps(result.structured_content, indent=2))
    for block in result.content:
        if getattr(block, "type", None) == "text":
            print(block.text, file=sys.stderr)


def sample_image_path() -> Path:
    return Path(str(resources.files("stillmotion") / "assets" / "sample.jpg"))


__all__ = ["main", "sample_image_path"]
