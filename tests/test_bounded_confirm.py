"""One meaning for yes (issue #22): the confirmation form has one boolean, and only an explicit
accept with that boolean true starts a paid job, on both protocol eras ("yes", "true" or 1 start
nothing). A client whose elicitation fails gets `confirmation_required`, never an internal error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import ElicitRequestParams, ElicitResult

from stillmotion.errors import Cancelled, ConfirmationRequired
from stillmotion.server import build_server
from stillmotion.tools.cost import _answer
from tests.conftest import SettingsFactory, error_text, structured, wait_done
from tests.fakes import XaiFake
from tests.test_cost_tools import CONFIRM_ENV, ONE, creates, img, jobs, xai, xai_env

pytestmark = pytest.mark.anyio
__all__ = ["img", "xai"]  # fixtures


def answering(start: Any) -> tuple[list[str], Any]:
    asked: list[str] = []

    async def cb(context: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"start": start})

    return asked, cb


async def broken(context: Any, params: ElicitRequestParams) -> ElicitResult:
    raise RuntimeError("the client's form crashed")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_only_the_boolean_true_starts_a_job(mode: str, xai: XaiFake, make_settings: SettingsFactory, img: Path) -> None:
    settings = make_settings(**xai_env(xai, **CONFIRM_ENV))
    for start in ("yes", "true", 1, "no", None):
        asked, cb = answering(start)
        async with Client(build_server(settings), mode=mode, elicitation_callback=cb) as client:  # type: ignore[arg-type]
            text = error_text(await client.call_tool("animate_image", {"image": str(img), **ONE}))
            assert "[cancelled]" in text and "not a yes" in text and "no job was created" in text, (start, text)
            assert len(asked) == 1 and await jobs(client) == []
    assert creates(xai) == []
    asked, cb = answering(True)
    async with Client(build_server(settings), mode=mode, elicitation_callback=cb) as client:  # type: ignore[arg-type]
        job = structured(await client.call_tool("animate_image", {"image": str(img), **ONE}))
        assert (await wait_done(client, job["job_id"]))["status"] == "succeeded"
    assert len(creates(xai)) == 1


async def test_failing_elicitation_is_confirmation_required(xai: XaiFake, make_settings: SettingsFactory, img: Path) -> None:
    settings = make_settings(**xai_env(xai, **CONFIRM_ENV))
    async with Client(build_server(settings), mode="legacy", elicitation_callback=broken) as client:  # type: ignore[arg-type]
        text = error_text(await client.call_tool("animate_image", {"image": str(img), **ONE}))
        assert "[confirmation_required]" in text and "asking the person failed" in text, text
        assert "internal" not in text.lower() and await jobs(client) == []
    assert creates(xai) == []


@pytest.mark.parametrize("answer", ["yes", 7, None, [], {"action": "explode"}, {"content": {"start": True}}])
def test_unreadable_answers_are_confirmation_required(answer: Any) -> None:
    with pytest.raises(ConfirmationRequired, match="could not be read"):
        _answer(answer, "a job")
    with pytest.raises(Cancelled, match="not a yes"):
        _answer({"action": "accept", "content": {"start": "yes"}}, "a job")
    _answer({"action": "accept", "content": {"start": True}}, "a job")
