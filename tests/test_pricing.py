"""Prices: the estimate of every model and option combination, the user price file, actual costs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from stillmotion.catalog import MODELS
from stillmotion.pricing import BUILT_IN, PriceBook, PriceFileError, load_price_book
from stillmotion.providers.gateway import gateway_actual
from stillmotion.providers.kling import kling_actual
from stillmotion.providers.xai import xai_actual
from stillmotion.settings import Settings

# (model, route, mode, sound, resolution, audio) -> USD per second. Every other combination is unknown.
KNOWN_PER_SECOND: dict[tuple[Any, ...], float] = {
    ("klingai/kling-v3.0-i2v", "gateway", "std", "off", None, None): 0.17,
    ("alibaba/wan-v2.6-i2v", "direct", None, None, "720P", None): 0.10,
    ("alibaba/wan-v2.6-i2v", "gateway", None, None, "720P", None): 0.10,
    ("alibaba/wan-v2.6-i2v", "direct", None, None, "1080P", None): 0.15,
    ("alibaba/wan-v2.6-i2v", "gateway", None, None, "1080P", None): 0.15,
    ("xai/grok-imagine-video", "direct", None, None, "480p", None): 0.05,
    ("xai/grok-imagine-video", "gateway", None, None, "480p", None): 0.05,
    ("xai/grok-imagine-video", "direct", None, None, "720p", None): 0.07,
    ("xai/grok-imagine-video", "gateway", None, None, "720p", None): 0.07,
}


def combinations() -> list[tuple[Any, ...]]:
    """One request per model, route and option combination that changes the price."""
    out = []
    for m in MODELS.values():
        routes = ["local"] if m.is_local else [*(["direct"] if m.direct_name else []), *(["gateway"] if m.gateway_id else [])]
        modes: list[str | None] = list(m.modes) or [None]
        for route, mode in itertools.product(routes, modes):
            sounds: list[str | None] = [None]
            if m.provider == "klingai":
                sounds = ["off", *(["on"] if mode in m.sound else [])]
            for sound, res, audio in itertools.product(
                sounds, list(m.resolutions) or [None], [False, True] if m.audio else [None]
            ):
                out.append((m.id, route, mode, sound, res, audio))
    return out


CASES = combinations()


def test_the_table_covers_every_model() -> None:
    assert {c[0] for c in CASES} == set(MODELS)
    # local 3 resolutions + Kling 28 (modes x sound x routes) + Wan 4 + Wan flash 8 + xAI 4
    # + xAI 1.5 6 (routes x 3 resolutions) + Veo 16 (gateway x 2 resolutions x audio) + Seedance 22 (#24)
    assert len(CASES) == 47 + 6 + 16 + 22


@pytest.mark.parametrize("case", CASES, ids=["|".join(str(x) for x in c) for c in CASES])
def test_estimate_per_model_and_option_combination(case: tuple[Any, ...]) -> None:
    model, route, mode, sound, res, audio = case
    options: dict[str, Any] = {}
    if mode is not None:
        options["mode"] = mode
    if sound is not None:
        options["sound"] = sound
    if res is not None:
        options["resolution"] = res
    if audio is not None:
        options["audio"] = audio
    cost = PriceBook().estimate(model=model, route=route, tool="animate_image", duration=10, options=options)
    if route == "local":
        assert (cost.estimated_usd, cost.estimate) == (0.0, False)
        return
    per_second = KNOWN_PER_SECOND.get(case)
    if per_second is None:
        assert cost.estimated_usd is None, cost
        assert "no price known" in cost.basis and "STILLMOTION_PRICES" in cost.basis
    else:
        assert cost.estimated_usd == pytest.approx(per_second * 10)
        assert cost.estimate is True and "10 s x $" in cost.basis and "source:" in cost.basis


def test_every_built_in_figure_has_a_source_and_is_an_estimate_unless_free() -> None:
    for p in BUILT_IN:
        assert p.source, p
        assert p.estimate is (p.model != "local/preview"), p


def write(tmp_path: Path, obj: Any) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


def test_user_file_overrides_one_figure_and_adds_another(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "prices": [
                {"model": "xai/grok-imagine-video", "resolution": "480p", "usd_per_second": 0.04,
                 "source": "our xAI contract", "estimate": False},
                {"model": "klingai/kling-v2.6-i2v", "route": "direct", "mode": "pro", "sound": "on",
                 "usd_per_clip": 1.25, "source": None},
            ],
            "kling_usd_per_unit": 0.14,
        },
    )
    settings = Settings.from_env({"STILLMOTION_HOME": str(tmp_path), "STILLMOTION_PRICES": str(path)})
    book = settings.prices
    x = book.estimate(model="xai/grok-imagine-video", route="direct", tool="animate_image", duration=5,
                      options={"resolution": "480p"})
    assert (x.estimated_usd, x.estimate) == (pytest.approx(0.20), False)
    assert "price file" in x.basis and "our xAI contract" in x.basis
    # the other figures are untouched
    x720 = book.estimate(model="xai/grok-imagine-video", route="direct", tool="animate_image", duration=5,
                         options={"resolution": "720p"})
    assert x720.estimated_usd == pytest.approx(0.35) and x720.estimate is True
    k = book.estimate(model="klingai/kling-v2.6-i2v", route="direct", tool="animate_image", duration=10,
                      options={"mode": "pro", "sound": "on"})
    assert k.estimated_usd == 1.25 and "per clip" in k.basis and "no source given" in k.basis
    silent = book.estimate(model="klingai/kling-v2.6-i2v", route="direct", tool="animate_image", duration=10,
                           options={"mode": "pro"})
    assert silent.estimated_usd is None
    assert book.kling_units_usd(5) == pytest.approx(0.70)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        ([], "JSON object"),
        ({"price": []}, "unknown key(s) price"),
        ({"prices": [{"model": "kling-9", "usd_per_second": 1}]}, 'model "kling-9" is not a known model'),
        ({"prices": [{"model": "xai/grok-imagine-video"}]}, "exactly one of usd_per_second and usd_per_clip"),
        ({"prices": [{"model": "xai/grok-imagine-video", "usd_per_second": -1}]}, "must be a number >= 0"),
        ({"prices": [{"model": "xai/grok-imagine-video", "usd_per_second": "0.05"}]}, "must be a number >= 0"),
        ({"prices": [{"model": "xai/grok-imagine-video", "usd_per_second": 1, "route": "fast"}]}, "route must be one of"),
        ({"prices": [{"model": "klingai/kling-v3.0-i2v", "usd_per_second": 1, "sound": True}]}, 'sound must be "on" or "off"'),
        ({"prices": [{"model": "alibaba/wan-v2.6-i2v-flash", "usd_per_second": 1, "audio": "yes"}]}, "audio must be true or false"),
        ({"prices": [{"model": "xai/grok-imagine-video", "usd_per_second": 1, "colour": "red"}]}, "unknown key(s) colour"),
        ({"kling_usd_per_unit": "cheap"}, "kling_usd_per_unit must be a number"),
    ],
)
def test_price_file_errors_name_the_entry_and_the_rule(tmp_path: Path, content: Any, needle: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(PriceFileError) as ei:
        load_price_book(path)
    assert needle in str(ei.value) and str(path) in str(ei.value)
    # start-up refuses it with the same message
    with pytest.raises(ValueError, match="STILLMOTION_PRICES"):
        Settings.from_env({"STILLMOTION_HOME": str(tmp_path), "STILLMOTION_PRICES": str(path)})


def test_missing_price_file_and_bad_budget_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        Settings.from_env({"STILLMOTION_PRICES": str(tmp_path / "nope.json")})
    with pytest.raises(ValueError, match="STILLMOTION_BUDGET_USD must be an amount"):
        Settings.from_env({"STILLMOTION_BUDGET_USD": "ten"})
    with pytest.raises(ValueError, match="STILLMOTION_BUDGET_PERIOD must be day, month or total"):
        Settings.from_env({"STILLMOTION_BUDGET_PERIOD": "week"})
    with pytest.raises(ValueError, match="STILLMOTION_CONFIRM_ABOVE_USD"):
        Settings.from_env({"STILLMOTION_CONFIRM_ABOVE_USD": "-1"})
    s = Settings.from_env({"STILLMOTION_BUDGET_USD": "12.5", "STILLMOTION_BUDGET_PERIOD": "DAY"})
    assert (s.budget_usd, s.budget_period, s.confirm_above_usd) == (12.5, "day", None)


def test_actual_costs_from_provider_answers() -> None:
    # xAI: 1 USD = 10^10 ticks (docs.x.ai cost tracking)
    x = xai_actual({"cost_in_usd_ticks": 500_000_000})
    assert x is not None and x.usd == pytest.approx(0.05) and "500000000" in x.source
    assert xai_actual({}) is None and xai_actual(None) is None and xai_actual({"cost_in_usd_ticks": True}) is None
    k = kling_actual({"final_unit_deduction": "5"})
    assert k is not None and (k.usd, k.units) == (None, 5.0)
    assert kling_actual({"final_unit_deduction": "lots"}) is None
    g = gateway_actual({"gateway": {"cost": "0.85"}})
    assert g is not None and g.usd == pytest.approx(0.85)
    gx = gateway_actual({"xai": {"requestId": "r", "costInUsdTicks": 2_500_000_000}})
    assert gx is not None and gx.usd == pytest.approx(0.25)
    assert gateway_actual({"klingai": {"taskId": "t"}}) is None
