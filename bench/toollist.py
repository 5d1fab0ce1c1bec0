"""Snapshot of the tool list's size: what a model reads on every turn (no timing; exact count)."""

from __future__ import annotations

import json
import tempfile


def tool_list_markdown() -> list[str]:
    from stillmotion.server import tools_list_payload
    from stillmotion.settings import Settings

    with tempfile.TemporaryDirectory() as home:
        payload = tools_list_payload(Settings.from_env({"STILLMOTION_HOME": home}))
    total = len(json.dumps(payload))
    lines = [
        "## Tool list size",
        "",
        f"`json.dumps([{{name, description, inputSchema}}])` of the {len(payload)} tools (default separators): "
        f"**{total:,} characters** (about {total // 4:,} tokens); the budget test (tests/test_tool_layer.py) allows "
        "18,000 including what later tools add.",
        "",
        "| tool | characters |",
        "|---|---:|",
    ]
    lines += [f"| {t['name']} | {len(json.dumps(t)):,} |" for t in payload]
    return lines
