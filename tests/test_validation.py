"""Every rule of the seed and the capability map holds before any request leaves the server.

Table-driven: each bad case is a tool error naming the argument and the allowed values, and the
fake providers record zero requests; each allowed edge passes. Plus a property test over random
arguments and schema/catalog drift checks.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from mcp import Client
from PIL import Image

from stillmotion.catalog import GENERATION_TOOLS, MODELS, model_ids_for_tool
from tests.conftest import SettingsFactory, connect, error_text, structured, write_image
from tests.fakes import KlingFake, WanFake, XaiFake

pytestmark = pytest.mark.anyio
MB = 1024 * 1024


@dataclass
class Fakes:
    kling: KlingFake
    wan: WanFake
    xai: XaiFake

    def requests(self) -> int:
        return sum(len(f.api_calls()) for f in (self.kling, self.wan, self.xai))


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    with KlingFake(api_key="k") as k, WanFake(api_key="w") as w, XaiFake(api_key="x") as x:
        yield Fakes(k, w, x)


@pytest.fixture(scope="module")
def imgs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("imgs")
    out = {
        "ok": write_image(d / "ok.png", 640, 480, 1),
        "side299": write_image(d / "side299.png", 299, 400, 2),
        "side300": write_image(d / "side300.png", 300, 400, 3),
        "ar250": write_image(d / "ar250.png", 750, 300, 4),
        "ar251": write_image(d / "ar251.png", 753, 300, 5),
        "png_named_jpg": write_image(d / "actually_png.jpg", 640, 480, 6, fmt="PNG"),
        "gif": write_image(d / "anim.gif", 640, 480, 7, fmt="GIF"),
        "webp": write_image(d / "photo.webp", 640, 480, 8, fmt="WEBP"),
        "local63": write_image(d / "tiny63.png", 63, 100, 9),
        "local64": write_image(d / "tiny64.png", 64, 100, 10),
        "local_ar4": write_image(d / "wide4.png", 400, 100, 11),
        "local_ar401": write_image(d / "wide401.png", 401, 100, 12),
        "mask_wrong_aspect": write_image(d / "mask_sq.png", 480, 480, 13),
        "mask_half": write_image(d / "mask_half.png", 320, 240, 14),
    }
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (1700, 2000, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, format="PNG", compress_level=0)
    raw = buf.getvalue()
    assert len(raw) <= 10 * MB
    for name, size in (("mb10", 10 * MB), ("mb10plus1", 10 * MB + 1)):
        # trailing bytes after IEND: still a valid PNG of the same picture, exactly `size` bytes
        (d / f"{name}.png").write_bytes(raw + b"\0" * (size - len(raw)))
        out[name] = d / f"{name}.png"
    return out


@pytest.fixture
async def client(fakes: Fakes, make_settings: SettingsFactory) -> AsyncIterator[Client]:
    env = {
        "KLINGAI_API_KEY": "k", "KLINGAI_BASE_URL": fakes.kling.base_url,
        "ALIBABA_API_KEY": "w", "ALIBABA_BASE_URL": fakes.wan.base_url,
        "XAI_API_KEY": "x", "XAI_BASE_URL": fakes.xai.base_url + "/v1",
    }
    async with connect(make_settings(**env)) as c:
        yield c


K26 = "klingai/kling-v2.6-i2v"
WAN = "alibaba/wan-v2.6-i2v"
FLASH = "alibaba/wan-v2.6-i2v-flash"
XAI = "xai/grok-imagine-video"
CAM = {"type": "simple", "config": {"zoom": 3}}


def _masks(n: int, points: int = 3, mask: Any = None) -> list[dict[str, Any]]:
    return [
        {"mask": mask or {"box": [10, 10, 60, 60]}, "trajectory": [{"x": 20 + i, "y": 20 + i} for i in range(points)]}
        for _ in range(n)
    ]


# (id, tool, args (image placeholders in {}), substrings the error must contain)
BAD: list[tuple[str, str, dict[str, Any], list[str]]] = [
    ("side299", "animate_image", {"model": K26, "image": "{side299}", "prompt": "p"}, ["image", "300 px"]),
    ("aspect251", "animate_image", {"model": K26, "image": "{ar251}", "prompt": "p"}, ["image", "aspect ratio", "1:2.5"]),
    ("size10mb+1", "animate_image", {"model": K26, "image": "{mb10plus1}", "prompt": "p"}, ["image", "10485760 bytes"]),
    ("gif", "animate_image", {"model": K26, "image": "{gif}", "prompt": "p"}, ["image", "GIF", "jpeg, png"]),
    ("webp_on_kling", "animate_image", {"model": K26, "image": "{webp}", "prompt": "p"}, ["image", "WEBP", "jpeg, png"]),
    ("local63", "animate_image", {"image": "{local63}"}, ["image", "64 px"]),
    ("local_ar401", "animate_image", {"image": "{local_ar401}"}, ["image", "aspect ratio", "4"]),
    ("local_gif", "animate_image", {"image": "{gif}"}, ["image", "GIF", "webp"]),
    ("not_an_image", "animate_image", {"image": "aGVsbG8gd29ybGQgdGhpcyBpcyBub3QgYW4gaW1hZ2U="}, ["image", "not a readable image"]),
    ("missing_file", "animate_image", {"image": "/nope/none.png"}, ["image", "no readable file"]),
    ("private_url", "animate_image", {"image": "http://127.0.0.1:9/x.png"}, ["image", "STILLMOTION_ALLOW_PRIVATE_NETWORK"]),
    ("unknown_model", "animate_image", {"model": "klingai/kling-v9-i2v", "image": "{ok}"}, ["model", "local/preview"]),
    ("kling_prompt_long", "animate_image", {"model": K26, "image": "{ok}", "prompt": "a" * 2501}, ["prompt", "2500"]),
    ("kling_prompt_missing", "animate_image", {"model": K26, "image": "{ok}"}, ["prompt", "requires"]),
    ("kling_neg_long", "animate_image", {"model": K26, "image": "{ok}", "prompt": "p", "negative_prompt": "n" * 2501}, ["negative_prompt", "2500"]),
    ("wan_prompt_long", "animate_image", {"model": WAN, "image": "{ok}", "prompt": "a" * 1501}, ["prompt", "1500"]),
    ("wan_prompt_missing", "animate_image", {"model": WAN, "image": "{ok}"}, ["prompt", "requires"]),
    ("wan_neg_long", "animate_image", {"model": WAN, "image": "{ok}", "prompt": "p", "negative_prompt": "n" * 501}, ["negative_prompt", "500"]),
    ("kling_duration", "animate_image", {"model": K26, "image": "{ok}", "prompt": "p", "duration": 7}, ["duration", "5, 10"]),
    ("wan_duration", "animate_image", {"model": WAN, "image": "{ok}", "prompt": "p", "duration": 1}, ["duration", "2"]),
    ("brush_duration_v1", "motion_brush", {"model": "klingai/kling-v1-i2v", "image": "{ok}", "prompt": "p", "duration": 10, "dynamic_masks": _masks(1)}, ["duration", "5"]),
    ("cfg_on_v2", "animate_image", {"model": K26, "image": "{ok}", "prompt": "p", "kling": {"cfg_scale": 0.5}}, ["kling.cfg_scale", "klingai/kling-v1-i2v"]),
    ("cfg_range", "animate_image", {"model": "klingai/kling-v1-i2v", "image": "{ok}", "prompt": "p", "kling": {"cfg_scale": 1.5}}, ["kling.cfg_scale", "must be <= 1; got 1.5", "from 0 to 1"]),
    ("sound_v25", "animate_image", {"model": "klingai/kling-v2.5-turbo-i2v", "image": "{ok}", "prompt": "p", "kling": {"sound": "on"}}, ["kling.sound", K26]),
    ("sound_v26_std", "animate_image", {"model": K26, "image": "{ok}", "prompt": "p", "kling": {"sound": "on"}}, ["kling.sound", "pro"]),
    ("voices_no_sound", "animate_image", {"model": K26, "image": "{ok}", "prompt": "p", "kling": {"mode": "pro", "voices": ["v"]}}, ["kling.voices", "sound: on"]),
    ("voices_three", "animate_image", {"model": K26, "image": "{ok}", "prompt": "p", "kling": {"mode": "pro", "sound": "on", "voices": ["a", "b", "c"]}}, ["kling.voices", "has 3 items", "at most 2"]),
    ("voice_ref", "animate_image", {"model": K26, "image": "{ok}", "prompt": "hi <<<voice_2>>>", "kling": {"mode": "pro", "sound": "on", "voices": ["a"]}}, ["prompt", "<<<voice_1>>>"]),
    ("audio_not_flash", "animate_image", {"model": WAN, "image": "{ok}", "prompt": "p", "wan": {"audio": True}}, ["wan.audio", FLASH]),
    ("xai_duration", "animate_image", {"model": XAI, "image": "{ok}", "prompt": "p", "duration": 16}, ["duration", "16 s is not offered", "15"]),
    ("xai_resolution", "animate_image", {"model": XAI, "image": "{ok}", "prompt": "p", "xai": {"resolution": "1080p"}}, ["resolution", "480p", "720p"]),
    ("xai_prompt_missing", "animate_image", {"model": XAI, "image": "{ok}"}, ["prompt", "requires"]),
    ("camera_two_axes", "camera_move", {"image": "{ok}", "camera": {"type": "simple", "config": {"zoom": 2, "pan": 1}}}, ["camera.config", "exactly one", "zoom in [-10, 10]"]),
    ("camera_no_axis", "camera_move", {"image": "{ok}", "camera": {"type": "simple", "config": {}}}, ["camera.config", "exactly one"]),
    ("camera_no_config", "camera_move", {"image": "{ok}", "camera": {"type": "simple"}}, ["camera.config", "horizontal"]),
    ("camera_preset_config", "camera_move", {"image": "{ok}", "camera": {"type": "down_back", "config": {"zoom": 1}}}, ["camera.config", "no config"]),
    ("camera_range", "camera_move", {"image": "{ok}", "camera": {"type": "simple", "config": {"zoom": 11}}}, ["camera.config.zoom", "must be <= 10; got 11", "from -10 to 10"]),
    ("camera_type", "camera_move", {"image": "{ok}", "camera": {"type": "orbit"}}, ["camera.type", "down_back"]),
    ("camera_v15_preset", "camera_move", {"model": "klingai/kling-v1.5-i2v", "image": "{ok}", "prompt": "p", "camera": {"type": "down_back"}, "kling": {"mode": "pro"}}, ["camera.type", "simple"]),
    ("camera_v15_std", "camera_move", {"model": "klingai/kling-v1.5-i2v", "image": "{ok}", "prompt": "p", "camera": CAM}, ["kling.mode", "pro", "never upgrades"]),
    ("camera_on_v26", "camera_move", {"model": K26, "image": "{ok}", "prompt": "p", "camera": CAM}, ["model", "klingai/kling-v1.5-i2v"]),
    ("brush_on_v16", "motion_brush", {"model": "klingai/kling-v1.6-i2v", "image": "{ok}", "prompt": "p", "dynamic_masks": _masks(1)}, ["model", "klingai/kling-v1-i2v"]),
    ("interp_on_wan", "interpolate_frames", {"model": WAN, "start_image": "{ok}", "end_image": "{ok}", "prompt": "p"}, ["model", "local/preview"]),
    ("interp_v26_std", "interpolate_frames", {"model": K26, "start_image": "{ok}", "end_image": "{ok}", "prompt": "p"}, ["kling.mode", "pro"]),
    ("interp_v26_sound", "interpolate_frames", {"model": K26, "start_image": "{ok}", "end_image": "{ok}", "prompt": "p", "kling": {"mode": "pro", "sound": "on"}}, ["kling.sound", "silent"]),
    ("masks_seven", "motion_brush", {"image": "{ok}", "dynamic_masks": _masks(7)}, ["dynamic_masks", "has 7 items", "1-6"]),
    ("traj_one_point", "motion_brush", {"image": "{ok}", "dynamic_masks": _masks(1, points=1)}, ["dynamic_masks[0].trajectory", "2-77"]),
    ("traj_78_points", "motion_brush", {"image": "{ok}", "duration": 5, "dynamic_masks": _masks(1, points=78)}, ["dynamic_masks[0].trajectory", "2-77"]),
    ("traj_outside", "motion_brush", {"image": "{ok}", "dynamic_masks": [{"mask": {"box": [0, 0, 50, 50]}, "trajectory": [{"x": 10, "y": 10}, {"x": 700, "y": 10}]}]}, ["dynamic_masks[0].trajectory[1]", "x in [0, 639]"]),
    ("mask_aspect", "motion_brush", {"image": "{ok}", "dynamic_masks": _masks(1, mask="{mask_wrong_aspect}")}, ["dynamic_masks[0].mask", "aspect ratio"]),
    ("mask_resolution", "motion_brush", {"image": "{ok}", "dynamic_masks": _masks(1, mask="{mask_half}"), "static_mask": {"box": [0, 0, 100, 100]}}, ["static_mask", "one resolution", "320x240"]),
    ("shape_outside", "motion_brush", {"image": "{ok}", "dynamic_masks": _masks(1, mask={"box": [600, 10, 700, 60]})}, ["dynamic_masks[0].mask", "outside"]),
    ("no_masks", "motion_brush", {"image": "{ok}", "dynamic_masks": []}, ["dynamic_masks", "has 0 items", "1-6"]),
    ("wait_range", "animate_image", {"image": "{ok}", "wait_seconds": 51}, ["wait_seconds", "must be <= 50", "from 0 to 50"]),
    ("unknown_arg", "animate_image", {"image": "{ok}", "fps": 30}, ["'fps': unknown argument", "image, "]),
    ("options_typo", "animate_image", {"model": K26, "image": "{ok}", "prompt": "p", "kling": {"mdoe": "pro"}}, ["'kling.mdoe'", "did you mean 'mode'?"]),
]

GOOD: list[tuple[str, str, dict[str, Any]]] = [
    ("side300", "animate_image", {"model": K26, "image": "{side300}", "prompt": "p"}),
    ("aspect250", "animate_image", {"model": K26, "image": "{ar250}", "prompt": "p"}),
    ("size10mb", "animate_image", {"model": K26, "image": "{mb10}", "prompt": "p"}),
    ("png_named_jpg", "animate_image", {"model": K26, "image": "{png_named_jpg}", "prompt": "p"}),
    ("kling_prompt_2500", "animate_image", {"model": K26, "image": "{ok}", "prompt": "a" * 2500}),
    ("v3_duration_7", "animate_image", {"model": "klingai/kling-v3.0-i2v", "image": "{ok}", "prompt": "p", "duration": 7}),
    ("voice_ok", "animate_image", {"model": K26, "image": "{ok}", "prompt": "<<<voice_1>>> hi", "kling": {"mode": "pro", "sound": "on", "voices": ["a"]}}),
    ("flash_audio", "animate_image", {"model": FLASH, "image": "{ok}", "prompt": "p", "wan": {"audio": True}}),
    ("xai_15s", "animate_image", {"model": XAI, "image": "{ok}", "prompt": "p", "duration": 15, "xai": {"resolution": "720p"}}),
    ("camera_v15_pro", "camera_move", {"model": "klingai/kling-v1.5-i2v", "image": "{ok}", "prompt": "p", "camera": CAM, "kling": {"mode": "pro"}}),
    ("brush_v1_std", "motion_brush", {"model": "klingai/kling-v1-i2v", "image": "{ok}", "prompt": "p", "dynamic_masks": _masks(6, points=77)}),
    ("local64", "animate_image", {"image": "{local64}", "local": {"resolution": "480p"}, "duration": 1}),
    ("local_ar4", "animate_image", {"image": "{local_ar4}", "local": {"resolution": "480p"}, "duration": 1}),
    ("local_webp", "animate_image", {"image": "{webp}", "local": {"resolution": "480p"}, "duration": 1}),
    ("local_traj_15s", "motion_brush", {"image": "{ok}", "duration": 15, "local": {"resolution": "480p"}, "dynamic_masks": _masks(1, points=231)}),
]


def _fill(value: Any, imgs: dict[str, Path]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in imgs:
        return str(imgs[value[1:-1]])
    if isinstance(value, dict):
        return {k: _fill(v, imgs) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, imgs) for v in value]
    return value


@pytest.mark.parametrize(("case", "tool", "args", "expect"), BAD, ids=[b[0] for b in BAD])
async def test_bad_input_is_a_precise_error_with_no_request(
    client: Client, fakes: Fakes, imgs: dict[str, Path], case: str, tool: str, args: dict[str, Any], expect: list[str]
) -> None:
    before = fakes.requests()
    text = error_text(await client.call_tool(tool, _fill(args, imgs)))
    for s in expect:
        assert s in text, f"{case}: {s!r} not in {text!r}"
    assert fakes.requests() == before, f"{case}: a provider request was made"
    jobs = structured(await client.call_tool("list_jobs", {}))["jobs"]
    assert jobs == []


@pytest.mark.parametrize(("case", "tool", "args"), GOOD, ids=[g[0] for g in GOOD])
async def test_allowed_edges_pass(client: Client, imgs: dict[str, Path], case: str, tool: str, args: dict[str, Any]) -> None:
    res = structured(await client.call_tool(tool, _fill(args, imgs)))
    assert res["status"] in ("queued", "running", "succeeded"), res


async def test_input_roots_and_http_default(make_settings: SettingsFactory, imgs: dict[str, Path], tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    inside = write_image(allowed / "a.png", 200, 200, 1)
    async with connect(make_settings(STILLMOTION_INPUT_ROOTS=str(allowed))) as c:
        text = error_text(await c.call_tool("animate_image", {"image": str(imgs["ok"])}))
        assert "outside the allowed input folders" in text and str(allowed.resolve()) in text
        structured(await c.call_tool("animate_image", {"image": str(inside), "duration": 1}))
        text = error_text(await c.call_tool("animate_image", {"image": str(allowed / ".." / "escape.png")}))
        assert "outside" in text
    async with connect(make_settings(transport="http")) as c:
        text = error_text(await c.call_tool("animate_image", {"image": str(inside)}))
        assert "STILLMOTION_INPUT_ROOTS" in text


async def test_missing_key_names_variables(make_settings: SettingsFactory, imgs: dict[str, Path]) -> None:
    async with connect(make_settings()) as c:
        text = error_text(await c.call_tool("animate_image", {"model": K26, "image": str(imgs["ok"]), "prompt": "p"}))
        assert "KLINGAI_API_KEY" in text and "AI_GATEWAY_API_KEY" in text and "local/preview" in text
        text = error_text(await c.call_tool("camera_move", {"model": "klingai/kling-v1.5-i2v", "image": str(imgs["ok"]), "prompt": "p", "camera": CAM, "kling": {"mode": "pro"}}))
        assert "KLINGAI_API_KEY" in text


# -- property test ------------------------------------------------------------------------

_models = st.sampled_from([*MODELS, "nope/model", None])
_text = st.one_of(st.none(), st.text(max_size=30), st.just("a" * 1600))
_num = st.one_of(st.integers(-3, 20), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3))
_opts = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={"mode": st.sampled_from(["std", "pro", "max"]), "cfg_scale": _num,
                                        "sound": st.sampled_from(["on", "off", "loud"]), "voices": st.lists(st.text(max_size=4), max_size=3)}),
)
_camera = st.one_of(
    st.none(),
    st.fixed_dictionaries({"type": st.sampled_from(["simple", "down_back", "spin", "forward_up"])},
                          optional={"config": st.dictionaries(st.sampled_from(["zoom", "pan", "roll", "warp"]), _num, max_size=3)}),
)


@hsettings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    tool=st.sampled_from(GENERATION_TOOLS),
    model=_models,
    prompt=_text,
    duration=st.one_of(st.none(), _num),
    image=st.sampled_from(["{ok}", "{gif}", "{side299}", "not a thing", "", "data:image/png;base64,!!", "{local63}"]),
    kling=_opts,
    camera=_camera,
    masks=st.one_of(st.none(), st.integers(0, 8)),
    extra=st.dictionaries(st.sampled_from(["fps", "seed", "wait_seconds"]), _num, max_size=1),
)
async def test_random_arguments_never_crash_or_leak_requests(
    client: Client, fakes: Fakes, imgs: dict[str, Path], tool: str, model: str | None, prompt: str | None,
    duration: Any, image: str, kling: Any, camera: Any, masks: int | None, extra: dict[str, Any],
) -> None:
    args: dict[str, Any] = {"image" if tool != "interpolate_frames" else "start_image": _fill(image, imgs)}
    if tool == "interpolate_frames":
        args["end_image"] = str(imgs["ok"])
    for k, v in (("model", model), ("prompt", prompt), ("duration", duration), ("kling", kling)):
        if v is not None:
            args[k] = v
    if tool == "camera_move" and camera is not None:
        args["camera"] = camera
    if tool == "motion_brush" and masks is not None:
        args["dynamic_masks"] = _masks(masks)
    args.update(extra)
    jobs_before = len(structured(await client.call_tool("list_jobs", {"limit": 200}))["jobs"])
    res = await client.call_tool(tool, args)
    if res.is_error:
        text = res.content[0].text  # type: ignore[union-attr]
        assert text.strip() != f"Error executing tool {tool}", "a generic error hides the reason"
        assert "Traceback" not in text
        # every provider request comes from a job; a refused call creates none (jobs accepted in
        # earlier examples may still be polling the fakes, so their request counts can't be compared)
        assert len(structured(await client.call_tool("list_jobs", {"limit": 200}))["jobs"]) == jobs_before
    else:
        assert res.structured_content and res.structured_content["status"] in ("queued", "running", "succeeded")


# -- schema and catalog cannot drift ------------------------------------------------------


async def test_schemas_are_generated_from_the_catalog(make_settings: SettingsFactory) -> None:
    async with connect(make_settings()) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        listed = json.loads((await c.read_resource("stillmotion://models")).contents[0].text)  # type: ignore[union-attr]
    for tool in GENERATION_TOOLS:
        schema = tools[tool].input_schema
        model = schema["properties"]["model"]
        enum = next(x["enum"] for x in model["anyOf"] if "enum" in x) if "anyOf" in model else model["enum"]
        assert enum == model_ids_for_tool(tool)
        desc = model["description"]
        named = {
            m.group(1) + middle + m.group(3)
            for m in re.finditer(r"([\w/.-]*)\{([^}]*)\}([\w.-]*)", desc)
            for middle in m.group(2).split(",")
        } | set(re.findall(r"[a-z][\w.-]*/[a-z][\w.-]*", re.sub(r"[\w/.-]*\{[^}]*\}[\w.-]*", "", desc)))
        assert named == {mid for mid in enum if mid in MODELS}, (tool, named)  # every model's rules, each once
        for mid in named:
            assert MODELS[mid].serves(tool)
        assert schema["properties"]["wait_seconds"]["maximum"] == 50
    cam = json.dumps(tools["camera_move"].input_schema)
    assert '"minimum": -10' in cam and '"maximum": 10' in cam and "counter-clockwise" in str(tools["camera_move"].description)
    kl = json.dumps(tools["animate_image"].input_schema)
    assert "only v1, v1.5, v1.6, v3.0" in kl and "STRETCHES" in kl  # cfg_scale: the catalog's Kling models
    by_id = {m["id"]: m for m in listed["models"]}
    assert set(by_id) == set(MODELS)
    assert by_id[K26]["prompt"]["max_chars"] == 2500 and by_id[WAN]["negative_prompt"]["max_chars"] == 500
    assert by_id["klingai/kling-v1.5-i2v"]["features"]["camera_move"] == {"modes": ["pro"], "durations": [5], "camera_types": ["simple"]}
    assert by_id["local/preview"]["route_now"] == "local" and by_id[K26]["route_now"] is None
    for tool in GENERATION_TOOLS:
        assert {m["id"] for m in listed["models"] if tool in m["tools"]} == {
            m for m in model_ids_for_tool(tool) if m in MODELS
        }


async def test_every_image_form_is_accepted(client: Client, fakes: Fakes, imgs: dict[str, Path]) -> None:
    import base64

    path = imgs["ok"]
    data = path.read_bytes()
    b64 = base64.b64encode(data).decode()
    url = fakes.kling.add_file("form.png", data, "image/png")
    forms = {
        "path": str(path),
        "file_uri": path.resolve().as_uri(),
        "data_uri": f"data:image/png;base64,{b64}",
        "raw_base64": b64,
    }
    sha = None
    for name, value in forms.items():
        res = structured(await client.call_tool("animate_image", {"image": value, "duration": 1, "local": {"resolution": "480p"}}))
        assert res["status"] in ("queued", "running", "succeeded"), name
        job = structured(await client.call_tool("check_job", {"job_id": res["job_id"], "wait_seconds": 20}))
        assert job["status"] == "succeeded", (name, job)
        stored = next((Path(job["video"]["path"]).parents[2] / "inputs" / res["job_id"]).glob("image.*"))
        sha = sha or stored.read_bytes()
        assert stored.read_bytes() == sha == data, name
    # a URL on a private address is refused unless allowed (the fake lives on loopback)
    text = error_text(await client.call_tool("animate_image", {"image": url}))
    assert "private" in text


async def test_raw_base64_jpeg_starting_with_slash(client: Client, tmp_path: Path) -> None:
    import base64

    jpg = write_image(tmp_path / "small.jpg", 200, 150, 4, fmt="JPEG")
    b64 = base64.b64encode(jpg.read_bytes()).decode()
    assert b64.startswith("/9j/") and len(b64) < 20000
    res = structured(await client.call_tool("animate_image", {"image": b64, "duration": 1, "local": {"resolution": "480p"}}))
    assert res["status"] in ("queued", "running", "succeeded")
    text = error_text(await client.call_tool("animate_image", {"image": "/tmp/definitely/not/here"}))
    assert "no readable file" in text
