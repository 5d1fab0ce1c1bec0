"""What a job costs before it is sent: the price table, the user's price file, and `estimate`.

Prices are per model and route, per second or per clip, and may depend on the tool, Kling's
mode and sound, the resolution, Wan's audio and Kling voices. Every figure carries its `source`
(or None) and `estimate: true` unless the source is the provider's own price page. There is no
price list in the references and no network here, so the built-in table holds only figures seen
in public material (see docs/decisions.md); everything else is *unknown* (None), never guessed.

A user file (`STILLMOTION_PRICES=path.json`) overrides or adds figures:

    {"prices": [{"model": "klingai/kling-v2.6-i2v", "route": "direct", "mode": "pro",
                 "sound": "on", "usd_per_second": 0.14, "source": "our contract", "estimate": false}],
     "kling_usd_per_unit": 0.14}

An entry matches a request when every condition it names (route, tool, mode, sound, resolution,
audio, voices) equals the request's; the most specific matching entry wins, and any matching user
entry wins over every built-in one.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .catalog import MODELS, resolve_model_id
from .providers.families import FAMILIES

CONDITIONS = ("route", "tool", "mode", "sound", "resolution", "audio", "voices")
"""The keys an entry may match on, in the order they are described."""
_BOOL_CONDITIONS = frozenset({"audio", "voices"})
_ROUTES = ("direct", "gateway", "local")

ISSUE_15 = "public figure reported in stillmotion issue #15"


class PriceFileError(ValueError):
    """The user price file is unreadable or breaks the format; the message says where and how."""


@dataclass(frozen=True)
class Price:
    model: str
    when: Mapping[str, Any] = field(default_factory=dict)
    """Conditions (a subset of CONDITIONS) that must all equal the request's."""
    usd_per_second: float | None = None
    usd_per_clip: float | None = None
    source: str | None = None
    estimate: bool = True
    user: bool = False

    @property
    def known(self) -> bool:
        return self.usd_per_second is not None or self.usd_per_clip is not None

    def matches(self, features: Mapping[str, Any]) -> bool:
        return all(_same(features.get(k), v) for k, v in self.when.items())

    def to_public(self) -> dict[str, Any]:
        return {
            "model": self.model,
            **dict(self.when),
            "usd_per_second": self.usd_per_second,
            "usd_per_clip": self.usd_per_clip,
            "source": self.source,
            "estimate": self.estimate,
            "from_price_file": self.user,
        }


def _same(have: Any, want: Any) -> bool:
    if isinstance(want, bool) or isinstance(have, bool):
        return bool(have) is bool(want)
    if have is None:
        return False
    return str(have).lower() == str(want).lower()


@dataclass(frozen=True)
class Cost:
    estimated_usd: float | None
    """None = no price is known for this request."""
    basis: str
    estimate: bool
    actual_usd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the built-in table -------------------------------------------------------------------------

BUILT_IN: tuple[Price, ...] = (
    Price("local/preview", {"route": "local"}, usd_per_clip=0.0,
          source="offline engine: no provider is called, nothing is billed", estimate=False),
    # "from $0.17/s": the lowest tier, so only std without sound; pro and sound stay unknown
    Price("klingai/kling-v3.0-i2v", {"route": "gateway", "mode": "std", "sound": "off"}, usd_per_second=0.17,
          source=f"{ISSUE_15}: Kling 3.0 via the Vercel AI Gateway 'from $0.17/s'"),
    Price("alibaba/wan-v2.6-i2v", {"resolution": "720P"}, usd_per_second=0.10,
          source=f"{ISSUE_15}: Wan 2.6 i2v $0.10/s at 720p via a reseller"),
    Price("alibaba/wan-v2.6-i2v", {"resolution": "1080P"}, usd_per_second=0.15,
          source=f"{ISSUE_15}: Wan 2.6 i2v $0.15/s at 1080p via a reseller"),
    Price("xai/grok-imagine-video", {"resolution": "480p"}, usd_per_second=0.05,
          source=f"{ISSUE_15}: Grok Imagine $0.05/s at 480p, unconfirmed"),
    Price("xai/grok-imagine-video", {"resolution": "720p"}, usd_per_second=0.07,
          source=f"{ISSUE_15}: Grok Imagine $0.07/s at 720p, unconfirmed"),
)
KLING_USD_PER_UNIT: float | None = None
"""Kling bills in units (`final_unit_deduction`); the USD price of a unit depends on the account's
resource pack and is published nowhere we can cite, so it comes only from the price file."""


# -- the price book -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceBook:
    entries: tuple[Price, ...] = BUILT_IN
    kling_usd_per_unit: float | None = KLING_USD_PER_UNIT
    kling_unit_source: str | None = None
    path: Path | None = None
    _index: dict[str, tuple[tuple[Price, ...], tuple[Price, ...]]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        """An index by model (user entries, built-in ones): an estimate looks at one model's few
        entries, never the whole table."""
        for model in dict.fromkeys(p.model for p in self.entries):
            mine = [p for p in self.entries if p.model == model]
            self._index[model] = (tuple(p for p in mine if p.user), tuple(p for p in mine if not p.user))

    def lookup(self, model: str, features: Mapping[str, Any]) -> Price | None:
        """The winning entry: user entries first, then the most specific (most conditions)."""
        for group in self._index.get(model, ((), ())):
            found = [p for p in group if p.matches(features)]
            if found:
                return max(found, key=lambda p: len(p.when))
        return None

    def estimate(
        self, *, model: str, route: str, tool: str, duration: float, options: Mapping[str, Any]
    ) -> Cost:
        """The cost of one request before it is sent."""
        features = request_features(model, route, tool, options)
        label = describe(model, route, features)
        if route == "local":
            return Cost(0.0, f"{label}: offline, free", estimate=False)
        price = self.lookup(model, features)
        if price is None or not price.known:
            src = f" ({price.source})" if price is not None and price.source else ""
            return Cost(
                None,
                f"{label}: no price known{src}; add one with STILLMOTION_PRICES (see README, Cost)",
                estimate=True,
            )
        if price.usd_per_second is not None:
            usd = price.usd_per_second * duration
            how = f"{duration:g} s x ${price.usd_per_second:g}/s"
        else:
            assert price.usd_per_clip is not None
            usd = price.usd_per_clip
            how = f"${price.usd_per_clip:g} per clip"
        tag = "estimate" if price.estimate else "provider price"
        src = price.source or "no source given"
        origin = "price file" if price.user else "built-in"
        return Cost(round_usd(usd), f"{label}: {how} ({tag}, {origin}; source: {src})", estimate=price.estimate)

    def kling_units_usd(self, units: float) -> float | None:
        return None if self.kling_usd_per_unit is None else round_usd(units * self.kling_usd_per_unit)

    def table(self) -> list[dict[str, Any]]:
        return [p.to_public() for p in self.entries]


def round_usd(usd: float) -> float:
    return round(usd, 6)


def request_features(model: str, route: str, tool: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """What a price may depend on, from a validated request's options."""
    spec = MODELS.get(model)
    out: dict[str, Any] = {"route": route, "tool": tool}
    if spec is None:
        return out
    basis = FAMILIES[spec.provider].price_basis
    if basis is not None:
        out.update(basis(options))
    if options.get("resolution") is not None:
        out["resolution"] = options.get("resolution")
    if spec.audio:
        out["audio"] = bool(options.get("audio", False))
    return out


def describe(model: str, route: str, features: Mapping[str, Any]) -> str:
    parts = [f"{model} via {route}"]
    if features.get("mode"):
        parts.append(str(features["mode"]))
    if features.get("resolution"):
        parts.append(str(features["resolution"]))
    if "sound" in features:
        parts.append(f"sound {features['sound']}" + (" with voices" if features.get("voices") else ""))
    if "audio" in features:
        parts.append("audio" if features["audio"] else "no audio")
    return ", ".join(parts)


# -- the user file ------------------------------------------------------------------------------

_ENTRY_KEYS = frozenset({"model", "usd_per_second", "usd_per_clip", "source", "estimate", "note", *CONDITIONS})
MAX_FILE_BYTES = 1024 * 1024
"""The largest price file read (a price table is a few kilobytes)."""
MAX_NESTING = 8
"""The deepest nesting of JSON arrays and objects accepted (the format itself needs 3)."""
MIN_USD, MAX_USD = 0.0001, 10_000.0
"""A price is 0 (free) or within these bounds (US dollars per second, per clip or per Kling unit):
smaller would show as free and skip the confirmation; larger overflows an estimate's display."""
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _read_price_file(p: Path, where: str) -> str:
    """The file's text: a regular file only (opened non-blocking, so a FIFO cannot hang start-up;
    /dev/zero is a character device), at most MAX_FILE_BYTES, UTF-8."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise PriceFileError(f"{where}: no such file.") from None
    except OSError as exc:
        raise PriceFileError(f"{where}: cannot be read ({exc.strerror}); it must be a regular JSON file.") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PriceFileError(f"{where}: not a regular file (a device, FIFO, socket or folder); it must be a JSON file.")
        if st.st_size > MAX_FILE_BYTES:
            raise PriceFileError(f"{where}: {st.st_size} bytes; a price file may hold at most {MAX_FILE_BYTES} bytes.")
        data = os.read(fd, MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise PriceFileError(f"{where}: over {MAX_FILE_BYTES} bytes; a price file may hold at most that.")
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PriceFileError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except OSError as exc:
        raise PriceFileError(f"{where}: cannot be read ({exc.strerror}).") from None
    finally:
        os.close(fd)


def _check_nesting(text: str, where: str) -> None:
    depth = 0
    for m in _JSON_TOKENS.finditer(text):
        token = m.group()
        if token in "[{":
            depth += 1
            if depth > MAX_NESTING:
                raise PriceFileError(
                    f"{where}: nested deeper than {MAX_NESTING} levels of arrays and objects (at character {m.start()})."
                )
        elif token in "]}":
            depth -= 1


def load_price_book(path: str | Path | None) -> PriceBook:
    """The built-in table plus the user's file (if any). Raises PriceFileError naming the problem."""
    if path is None or str(path).strip() == "":
        return PriceBook()
    p = Path(path).expanduser()
    where = f"STILLMOTION_PRICES={p}"
    text = _read_price_file(p, where)
    _check_nesting(text, where)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PriceFileError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).") from None
    if not isinstance(raw, dict):
        raise PriceFileError(f"{where}: the file must hold a JSON object with a 'prices' list.")
    unknown = sorted(set(raw) - {"prices", "kling_usd_per_unit", "kling_unit_source"})
    if unknown:
        raise PriceFileError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: prices, kling_usd_per_unit, kling_unit_source."
        )
    items = raw.get("prices", [])
    if not isinstance(items, list):
        raise PriceFileError(f"{where}: 'prices' must be a list of price entries.")
    entries = [_parse_entry(item, f"{where}: prices[{i}]") for i, item in enumerate(items)]
    unit = raw.get("kling_usd_per_unit")
    if unit is not None:
        unit = _usd(unit, f"{where}: kling_usd_per_unit")
    unit_source = raw.get("kling_unit_source")
    if unit_source is not None and not isinstance(unit_source, str):
        raise PriceFileError(f"{where}: kling_unit_source must be a string.")
    return PriceBook(
        entries=(*entries, *BUILT_IN),
        kling_usd_per_unit=unit if unit is not None else KLING_USD_PER_UNIT,
        kling_unit_source=unit_source,
        path=p,
    )


def _usd(value: Any, where: str) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or not (value == 0 or MIN_USD <= value <= MAX_USD):
        raise PriceFileError(
            f"{where} must be a number >= 0 (US dollars): 0 for free, or from {MIN_USD:g} to {MAX_USD:g}; "
            f"got {json.dumps(value)}."
        )
    return float(value)


def _parse_entry(item: Any, where: str) -> Price:
    if not isinstance(item, dict):
        raise PriceFileError(f"{where} must be an object like {{\"model\": ..., \"usd_per_second\": ...}}.")
    unknown = sorted(set(item) - _ENTRY_KEYS)
    if unknown:
        raise PriceFileError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_ENTRY_KEYS))}.")
    model_arg = item.get("model")
    model = resolve_model_id(model_arg) if isinstance(model_arg, str) else None
    if model is None:
        raise PriceFileError(f"{where}: model {json.dumps(model_arg)} is not a known model; allowed: {', '.join(MODELS)}.")
    per_s, per_clip = item.get("usd_per_second"), item.get("usd_per_clip")
    if (per_s is None) == (per_clip is None):
        raise PriceFileError(f"{where} ({model}): give exactly one of usd_per_second and usd_per_clip.")
    when: dict[str, Any] = {}
    for key in CONDITIONS:
        if key not in item or item[key] is None:
            continue
        value = item[key]
        if key in _BOOL_CONDITIONS:
            if not isinstance(value, bool):
                raise PriceFileError(f"{where} ({model}): {key} must be true or false, got {json.dumps(value)}.")
        elif key == "route" and value not in _ROUTES:
            raise PriceFileError(f"{where} ({model}): route must be one of {', '.join(_ROUTES)}, got {json.dumps(value)}.")
        elif key == "sound" and value not in ("on", "off"):
            raise PriceFileError(f"{where} ({model}): sound must be \"on\" or \"off\", got {json.dumps(value)}.")
        elif not isinstance(value, str):
            raise PriceFileError(f"{where} ({model}): {key} must be a string, got {json.dumps(value)}.")
        when[key] = value
    source = item.get("source")
    if source is not None and not isinstance(source, str):
        raise PriceFileError(f"{where} ({model}): source must be a string or null.")
    estimate = item.get("estimate", True)
    if not isinstance(estimate, bool):
        raise PriceFileError(f"{where} ({model}): estimate must be true or false.")
    return Price(
        model=model,
        when=when,
        usd_per_second=_usd(per_s, f"{where} ({model}): usd_per_second") if per_s is not None else None,
        usd_per_clip=_usd(per_clip, f"{where} ({model}): usd_per_clip") if per_clip is not None else None,
        source=source,
        estimate=estimate,
        user=True,
    )


# -- actual cost --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActualCost:
    """What the provider's own answer says the job cost (read by each provider module's status)."""

    usd: float | None = None
    units: float | None = None
    """Kling's `final_unit_deduction` (account units, not dollars)."""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"usd": self.usd, "units": self.units, "source": self.source}


def reported_amount(raw: Any) -> float | None:
    """A figure from a provider's answer (a number or a numeric string) when it is finite and >= 0,
    else None. Each provider module reads its own answer's fields into an `ActualCost` with it."""
    if raw is None or isinstance(raw, bool):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def actual_usd(actual: ActualCost | None, book: PriceBook) -> float | None:
    if actual is None:
        return None
    if actual.usd is not None:
        return actual.usd
    if actual.units is not None:
        return book.kling_units_usd(actual.units)
    return None
