"""The tool layer every client sees: converter-safe schemas within a token budget, one error form
for every mistake (exact texts), compact list_models, resource links that can be turned off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp.types import ImageContent, ResourceLink

from stillmotion.catalog import GENERATION_TOOLS, MODELS, models_for_tool
from stillmotion.plan.arguments import ARGS_BY_TOOL, CONTROL_FIELDS, OPTION_ARGUMENTS
from stillmotion.plan.requests import OPTION_FIELDS, GenerationRequest
from stillmotion.server import tools_list_payload
from stillmotion.tools.argerrors import MAX_ERROR_CHARS
from stillmotion.tools.schema import nested_unions, walk
from tests.conftest import SettingsFactory, connect, error_text, structured

pytestmark = pytest.mark.anyio

TOKEN_BUDGET = 18_000
"""json.dumps([{name, description, inputSchema}]) with default separators, every tool included."""


async def test_token_budget_of_the_tool_list(make_settings: SettingsFactory) -> None:
    async with connect(make_settings()) as c:
        tools = (await c.list_tools()).tools
    payload = [{"name": t.name, "description": t.description, "inputSchema": t.input_schema} for t in tools]
    size = len(json.dumps(payload))
    assert payload == tools_list_payload(make_settings())  # what bench/RESULTS.md snapshots
    assert size <= TOKEN_BUDGET, f"tools/list costs {size} characters; the budget is {TOKEN_BUDGET}"


async def test_schemas_every_converter_accepts(make_settings: SettingsFactory) -> None:
    for strict in ("1", "0"):
        async with connect(make_settings(STILLMOTION_STRICT_CAPABILITIES=strict)) as c:
            tools = (await c.list_tools()).tools
        for t in tools:
            text = json.dumps(t.input_schema)
            assert "$ref" not in text and "$defs" not in text, t.name
            assert "oneOf" not in text, t.name
            assert nested_unions(t.input_schema) == [], t.name
            assert t.input_schema["type"] == "object" and t.input_schema["additionalProperties"] is False
            for node in walk(t.input_schema):
                assert "title" not in node or not isinstance(node["title"], str), t.name
            if t.output_schema is not None:
                assert "$ref" not in json.dumps(t.output_schema), t.name


def _option_objects(schema: dict[str, Any]) -> set[str]:
    return {name for name in OPTION_ARGUMENTS if name in schema["properties"]}


async def test_each_tool_carries_only_the_options_of_its_providers(make_settings: SettingsFactory) -> None:
    async with connect(make_settings()) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    for tool in GENERATION_TOOLS:
        expected = {OPTION_FIELDS[m.provider] for m in models_for_tool(tool)}
        assert _option_objects(tools[tool].input_schema) == expected, tool
        # the argument model (what the server accepts) agrees with the schema
        assert {n for n in OPTION_ARGUMENTS if n in ARGS_BY_TOOL[tool].model_fields} == expected, tool
    for tool in ("camera_move", "motion_brush", "interpolate_frames"):
        assert not {"wan", "xai"} & set(tools[tool].input_schema["properties"]), tool
    # camera_move's Kling models have no sound: the field is not advertised (the server still refuses it)
    kling = next(m for m in tools["camera_move"].input_schema["properties"]["kling"]["anyOf"] if m["type"] == "object")
    assert "sound" not in kling["properties"] and "mode" in kling["properties"]


def test_every_argument_reaches_the_request() -> None:
    request_fields = set(GenerationRequest.model_fields)  # the stored request each argument fills
    for tool, cls in ARGS_BY_TOOL.items():
        for name in cls.model_fields:
            if name in CONTROL_FIELDS:
                continue
            target = "image" if name == cls.image_argument else name
            assert target in request_fields, f"{tool}.{name} is validated but never reaches the job request"


# -- one error form ------------------------------------------------------------------------

X = "x.png"
ERRORS: list[tuple[str, str, dict[str, Any], str]] = [
    ("unknown_axis", "camera_move", {"image": X, "camera": {"type": "simple", "config": {"dolly": 3}}},
     "[invalid_input] Invalid argument 'camera.config.dolly': unknown field. Allowed: horizontal, vertical, pan, tilt, roll, zoom."),
    ("typo_argument", "animate_image", {"image": X, "duraton": 5},
     "[invalid_input] Invalid argument 'duraton': unknown argument; did you mean 'duration'? Allowed: model, prompt, "
     "negative_prompt, duration, wait_seconds, idempotency_key, dry_run, confirm_cost_usd, kling, local, image, wan, xai, "
     "veo, seedance."),
    ("zoom_range", "camera_move", {"image": X, "camera": {"type": "simple", "config": {"zoom": 20}}},
     "[invalid_input] Invalid argument 'camera.config.zoom': must be <= 10; got 20. Allowed: a number from -10 to 10."),
    ("option_typo", "animate_image", {"image": X, "kling": {"mdoe": "pro"}},
     "[invalid_input] Invalid argument 'kling.mdoe': unknown field; did you mean 'mode'? Allowed: mode, cfg_scale, sound, "
     "voices, watermark, shots, shot_type, elements, poll_interval_ms, poll_timeout_ms."),
    ("camera_type", "camera_move", {"image": X, "camera": {"type": "orbit"}},
     "[invalid_input] Invalid argument 'camera.type': 'orbit' is not allowed. Allowed: simple, down_back, forward_up, "
     "right_turn_forward, left_turn_forward."),
    ("camera_type_near", "camera_move", {"image": X, "camera": {"type": "simpel"}},
     "[invalid_input] Invalid argument 'camera.type': 'simpel' is not allowed; did you mean 'simple'? Allowed: simple, "
     "down_back, forward_up, right_turn_forward, left_turn_forward."),
    ("missing_image", "animate_image", {},
     "[invalid_input] Invalid argument 'image': is required. Allowed: Path, URL, data: URI, base64, or "
     "stillmotion://jobs/<id>/last-frame.png (chaining)."),
    ("duration_type", "animate_image", {"image": X, "duration": "abc"},
     "[invalid_input] Invalid argument 'duration': got 'abc', which is not an integer. Allowed: an integer."),
    ("box_short", "motion_brush", {"image": X, "dynamic_masks": [{"mask": {"box": [1, 2]}, "trajectory": [{"x": 1, "y": 2}]}]},
     "[invalid_input] Invalid argument 'dynamic_masks[0].mask.box': has 2 items. Allowed: a list of 4 items (a number)."),
    ("mask_type", "motion_brush", {"image": X, "dynamic_masks": [{"mask": 3, "trajectory": []}]},
     "[invalid_input] Invalid argument 'dynamic_masks[0].mask': got 3; a mask is an image string or a shape object "
     "{box: [...]} / {polygon: [...]}. Allowed: a string or an object {box} or an object {polygon}."),
    ("point_missing_y", "motion_brush", {"image": X, "dynamic_masks": [{"mask": "m.png", "trajectory": [{"x": 1}]}]},
     "[invalid_input] Invalid argument 'dynamic_masks[0].trajectory[0].y': is required. Allowed: a number."),
    ("limit_range", "list_jobs", {"limit": 0},
     "[invalid_input] Invalid argument 'limit': must be >= 1; got 0. Allowed: an integer from 1 to 200."),
    ("status_near", "list_jobs", {"status": "suceeded"},
     "[invalid_input] Invalid argument 'status': 'suceeded' is not allowed; did you mean 'succeeded'? Allowed: queued, "
     "running, downloading, succeeded, failed, cancelled."),
    ("job_id_missing", "check_job", {},
     "[invalid_input] Invalid argument 'job_id': is required. Allowed: The job id a generation tool returned."),
    ("unknown_tool", "camra_move", {},
     "[invalid_input] Invalid argument 'name': unknown tool 'camra_move'; did you mean 'camera_move'? Allowed: "
     "animate_image, interpolate_frames, camera_move, motion_brush, join_clips, extend_video, check_job, list_jobs, "
     "cancel_job, delete_job, list_models."),
    ("resolution", "animate_image", {"image": X, "local": {"resolution": "4k"}},
     "[invalid_input] Invalid argument 'local.resolution': '4k' is not allowed. Allowed: 480p, 720p, 1080p."),
    ("aspect_near", "animate_image", {"image": X, "xai": {"aspect_ratio": "21:9"}},
     "[invalid_input] Invalid argument 'xai.aspect_ratio': '21:9' is not allowed; did you mean '16:9'? Allowed: 1:1, "
     "16:9, 9:16, 4:3, 3:4, 3:2, 2:3."),
    ("prompt_type", "animate_image", {"image": X, "prompt": 5},
     "[invalid_input] Invalid argument 'prompt': got 5, which is not a string. Allowed: a string."),
    # caught by the server's own checks, in the same form
    ("model_near", "camera_move", {"image": X, "model": "klingai/kling-v1.5", "camera": {"type": "down_back"}},
     "[invalid_input] Invalid argument 'model': unknown model 'klingai/kling-v1.5' for camera_move; did you mean "
     "'klingai/kling-v1.5-i2v'? Allowed: local/preview, klingai/kling-v1.5-i2v."),
    ("two_axes", "camera_move", {"image": X, "camera": {"type": "simple", "config": {"pan": 2, "zoom": 1}}},
     "[invalid_input] Invalid argument 'camera.config': type simple needs exactly one non-zero axis; got 2 (pan, zoom). "
     "Allowed: horizontal in [-10, 10], vertical in [-10, 10], pan in [-10, 10], tilt in [-10, 10], roll in [-10, 10], "
     "zoom in [-10, 10]."),
]


@pytest.mark.parametrize(("case", "tool", "args", "expected"), ERRORS, ids=[e[0] for e in ERRORS])
async def test_every_mistake_reads_the_same(
    make_settings: SettingsFactory, case: str, tool: str, args: dict[str, Any], expected: str
) -> None:
    async with connect(make_settings()) as c:
        text = error_text(await c.call_tool(tool, args))
    assert text == expected
    assert len(text) < MAX_ERROR_CHARS and "pydantic" not in text and "Error executing tool" not in text


async def test_long_allowed_lists_are_cut_to_fit(make_settings: SettingsFactory) -> None:
    async with connect(make_settings()) as c:
        text = error_text(await c.call_tool("animate_image", {"image": X, "model": "nope/" + "x" * 300}))
    assert text.startswith("[invalid_input] Invalid argument 'model': unknown model") and len(text) <= MAX_ERROR_CHARS
    assert text.endswith("....") or text.endswith("...")


# -- list_models ---------------------------------------------------------------------------


async def test_list_models_compact_and_one_model_in_full(make_settings: SettingsFactory) -> None:
    async with connect(make_settings(KLINGAI_API_KEY="k")) as c:
        for tool in (None, *GENERATION_TOOLS):
            res = await c.call_tool("list_models", {} if tool is None else {"tool": tool})
            text = res.content[0].text  # type: ignore[union-attr]
            assert len(text) <= 4000 and len(json.dumps(res.structured_content)) <= 8000, tool
        table = structured(await c.call_tool("list_models", {}))
        rows = {r["id"]: r for r in table["models"]}
        assert set(rows) == set(MODELS)
        assert rows["klingai/kling-v2.6-i2v"]["route_now"] == "direct"
        assert rows["alibaba/wan-v2.6-i2v"]["route_now"] is None
        assert rows["alibaba/wan-v2.6-i2v"]["needs"] == "ALIBABA_API_KEY (or DASHSCOPE_API_KEY) or AI_GATEWAY_API_KEY"
        one = structured(await c.call_tool("list_models", {"model": "klingai/kling-v1.5-i2v"}))["models"][0]
        assert one["features"]["camera_move"] == {"modes": ["pro"], "durations": [5], "camera_types": ["simple"]}
        assert one["image"]["rule"].startswith("jpg/jpeg/png")
        camera = structured(await c.call_tool("list_models", {"tool": "camera_move"}))
        assert [r["id"] for r in camera["models"]] == ["local/preview", "klingai/kling-v1.5-i2v"]
        resource = json.loads((await c.read_resource("stillmotion://models")).contents[0].text)  # type: ignore[union-attr]
        assert {m["id"] for m in resource["models"]} == set(MODELS) and all("image" in m for m in resource["models"])


# -- resource links ------------------------------------------------------------------------


@pytest.mark.parametrize("links", ["1", "0"])
async def test_resource_links_can_be_left_out(make_settings: SettingsFactory, image_480: Path, links: str) -> None:
    async with connect(make_settings(STILLMOTION_RESOURCE_LINKS=links)) as c:
        res = await c.call_tool(
            "animate_image", {"image": str(image_480), "duration": 1, "local": {"resolution": "480p"}, "wait_seconds": 40}
        )
        job = structured(res)
        while job["status"] not in ("succeeded", "failed"):
            res = await c.call_tool("check_job", {"job_id": job["job_id"], "wait_seconds": 40})
            job = structured(res)
    assert job["status"] == "succeeded"
    kinds = [type(b) for b in res.content]
    assert (ResourceLink in kinds) is (links == "1")
    assert ImageContent in kinds
    assert job["video"]["path"] in res.content[0].text  # type: ignore[union-attr]


# -- status_detail: a job waiting on retries says so --------------------------------------


async def test_unreachable_provider_retry_status_shows_in_check_job_within_2_s(
    make_settings: SettingsFactory, image_480: Path
) -> None:
    import socket

    import anyio

    with socket.socket() as s:  # a port nobody listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(
        KLINGAI_API_KEY="k", KLINGAI_BASE_URL=f"http://127.0.0.1:{port}", STILLMOTION_RETRY_BASE_MS="1000"
    )
    async with connect(settings) as c:
        job = structured(await c.call_tool(
            "animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(image_480), "prompt": "x"}))  # fmt: skip
        seen: dict[str, Any] = {}
        with anyio.fail_after(2):
            while not seen.get("status_detail"):
                res = await c.call_tool("check_job", {"job_id": job["job_id"]})
                seen = structured(res)
                await anyio.sleep(0.02)
        detail = seen["status_detail"]
        assert detail.startswith("retrying: could not connect to 127.0.0.1") and ", attempt 1 of 5, next in " in detail
        assert f"Now: {detail}." in res.content[0].text  # type: ignore[union-attr]
        assert seen["next_step"].startswith(f"It is {detail}. Call check_job")
        messages: list[str] = []

        async def progress(p: float, total: float | None, message: str | None) -> None:
            messages.append(message or "")

        await c.call_tool("check_job", {"job_id": job["job_id"], "wait_seconds": 0.3}, progress_callback=progress)
        assert any("retrying: could not connect to 127.0.0.1" in m for m in messages), messages
        await c.call_tool("cancel_job", {"job_id": job["job_id"]})


# -- exact: what the schema no longer says, the server still refuses ----------------------

MOVED_TO_THE_SERVER: list[tuple[str, dict[str, Any], list[str]]] = [
    # (tool, arguments, substrings of the error): rules published loosely (or not at all) but enforced
    ("camera_move", {"image": X, "camera": {"type": "down_back"}, "duration": 16}, ["'duration'", "16 s is not offered"]),
    ("camera_move", {"image": X, "camera": {"type": "down_back"}, "model": "alibaba/wan-v2.6-i2v"},
     ["'model'", "cannot serve camera_move"]),
    ("camera_move", {"image": X, "camera": {"type": "down_back"}, "model": "klingai/kling-v1.5-i2v", "prompt": "p",
                     "kling": {"mode": "pro", "sound": "on"}}, ["'kling.sound'", "cannot generate sound"]),
    ("camera_move", {"image": X, "camera": {"type": "down_back"}, "kling": {"poll_interval_ms": 10}},
     ["'kling.poll_interval_ms'", "must be >= 50"]),
    ("camera_move", {"image": X, "camera": {"type": "down_back"}, "kling": {"shape": 1}},
     ["'kling.shape'", "unknown field"]),
    ("animate_image", {"image": X, "model": "xai/grok-imagine-video", "prompt": "p", "negative_prompt": "n" * 2501},
     ["'negative_prompt'", "is 2501 characters long"]),
    ("motion_brush", {"image": X, "dynamic_masks": [{"mask": {"box": [1, 2, 3, 4], "round": 1}, "trajectory": []}]},
     ["'dynamic_masks[0].mask.round'", "unknown field"]),
]


@pytest.mark.parametrize(("tool", "args", "expect"), MOVED_TO_THE_SERVER)
async def test_rules_left_out_of_the_schema_are_enforced_by_the_server(
    make_settings: SettingsFactory, tool: str, args: dict[str, Any], expect: list[str]
) -> None:
    async with connect(make_settings(KLINGAI_API_KEY="k", XAI_API_KEY="x")) as c:
        text = error_text(await c.call_tool(tool, args))
        assert structured(await c.call_tool("list_jobs", {}))["jobs"] == []
    for s in expect:
        assert s in text, text


def test_the_schema_accepts_every_allowed_edge(make_settings: SettingsFactory) -> None:
    import jsonschema

    from tests.test_validation import GOOD

    schemas = {s["name"]: s["inputSchema"] for s in tools_list_payload(make_settings())}
    for _case, tool, args in GOOD:  # image placeholders like "{ok}" are strings, as paths are
        jsonschema.validate(args, schemas[tool])
