"""The tool layer's cost hooks: `dry_run`, the confirmation above a threshold, their results.

Whatever module registers the generation tools calls, in its handler:

* `dry_run_result(svc, args)` when `dry_run` is true: every check, the route, the estimate and
  the request that would be sent; no job, no request. Its shape (`DryRunResult`) is the second
  arm of the generation tools' output schema (`GenerationResult`).
* `confirm(svc, args, ..., asker=Asker(...))` before submitting: None when the job may start. On
  a 2026-07-28 connection an unanswered question comes back as an `InputRequiredResult` for the
  handler to return (the client asks the person and retries with the answer); on a 2025-era
  connection the person is asked right away with `elicitation/create`. A client without
  elicitation must pass `confirm_cost_usd` (error kind `confirmation_required` otherwise).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.to_thread
from mcp.server.elicitation import (
    AcceptedElicitation,
    CancelledElicitation,
    DeclinedElicitation,
    render_elicitation_schema,
)
from mcp.types import (
    CallToolResult,
    ClientCapabilities,
    ElicitRequest,
    ElicitRequestFormParams,
    InputRequiredResult,
    TextContent,
)
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, Field, RootModel

from ..catalog import MODELS
from ..errors import Cancelled, ConfirmationRequired
from ..http.users import Principal
from ..http.users import current as current_asker
from ..plan.arguments import RequestArgs
from ..plan.validation import Plan
from ..pricing import Cost
from .results import CostInfo, JobResult

if TYPE_CHECKING:  # avoids an import cycle with service
    from ..service import Service

class ProviderRequest(BaseModel):
    method: str | None
    url: str | None
    headers: dict[str, str]
    body: dict[str, Any]
    note: str | None = None


class DryRunResult(BaseModel):
    dry_run: Literal[True] = True
    tool: str
    model: str
    route: Literal["direct", "gateway", "local"]
    duration: int
    cost: CostInfo
    request: ProviderRequest = Field(description="<job_id> and base64 images are placeholders; no credentials")
    needs_confirmation: bool
    warnings: list[str] = Field(default_factory=list)
    next_step: str


class GenerationResult(RootModel[JobResult | DryRunResult]):
    """A job, or (dry_run) what would be sent and what it would cost."""


class ConfirmCost(BaseModel):
    start: bool = Field(description="Start the job and pay for it")


CONFIRM_KEY = "stillmotion_confirm_cost"
"""The key of the confirmation question in a 2026-07-28 InputRequiredResult."""
_INPUT_REQUIRED_VERSION = "2026-07-28"


@dataclass(frozen=True)
class Asker:
    """What a tool call offers for asking the person (from the SDK Context or the request context)."""

    protocol_version: str | None
    capabilities: ClientCapabilities | None
    session: Any
    request_id: Any
    input_responses: Mapping[str, Any] | None = None
    request_state: str | None = None

    @property
    def can_elicit(self) -> bool:
        el = self.capabilities.elicitation if self.capabilities is not None else None
        return el is not None and (el.form is not None or el.url is None)

    @property
    def input_required(self) -> bool:
        """2026-07-28 and later ask through an InputRequiredResult; earlier eras with elicitation/create."""
        return self.protocol_version is not None and is_version_at_least(self.protocol_version, _INPUT_REQUIRED_VERSION)


def job_label(model: str, options: dict[str, Any], duration: int) -> str:
    spec = MODELS[model]
    name = spec.title.removesuffix(" image-to-video")
    mode = options.get("mode")
    extra = " with sound" if options.get("sound") == "on" or options.get("audio") else ""
    return f"{name}{' ' + mode if mode else ''}{extra}, {duration} s"


def _about(cost: Cost) -> str:
    if cost.estimated_usd is None:
        return "price unknown (no price for it in the table)"
    if cost.estimated_usd == 0:
        return "free"
    return f"about ${cost.estimated_usd:.2f}" + ("" if cost.estimate else " (provider price)")


def needs_confirmation(threshold: float | None, cost: Cost) -> bool:
    if threshold is None or cost.estimated_usd == 0.0:
        return False
    return cost.estimated_usd is None or cost.estimated_usd > threshold


def _digest(message: str) -> str:
    return "sm1:" + hashlib.sha256(message.encode()).hexdigest()[:24]


def _answer(result: Any, label: str) -> None:
    """Raise Cancelled unless the person accepted with `start` the JSON boolean true. The raw answer
    is read the same way on both protocol eras: no coercion, so "yes", 1 or "true" are not a yes."""
    action: Any
    content: Any
    if isinstance(result, AcceptedElicitation):
        data = result.data
        action, content = "accept", data.model_dump() if isinstance(data, BaseModel) else data
    elif isinstance(result, DeclinedElicitation | CancelledElicitation):
        action, content = result.action, None
    else:
        raw = result.model_dump() if isinstance(result, BaseModel) else result
        raw = raw if isinstance(raw, Mapping) else {}
        action, content = raw.get("action"), raw.get("content")
    if action not in ("accept", "decline", "cancel"):
        raise ConfirmationRequired(
            f"The answer about {label} could not be read (no accept, decline or cancel in it); no job was created. "
            "Ask again, or pass confirm_cost_usd once the person agrees."
        )
    start = content.get("start") if isinstance(content, Mapping) else None
    if action == "accept" and start is True:
        return
    if action == "accept" and start is not False:
        raise Cancelled(
            f"The answer about {label} was not a yes: the form's start must be the boolean true to start the job "
            f"(got {json.dumps(start)[:40]}); no job was created and nothing was sent."
        )
    if action == "accept":
        raise Cancelled(f"The person said no to {label}; no job was created and nothing was sent.")
    if action == "decline":
        raise Cancelled(f"The person declined {label}; no job was created and nothing was sent.")
    raise Cancelled(f"The confirmation of {label} was cancelled; no job was created and nothing was sent.")


async def confirm(
    svc: Service,
    tool: str,
    plan: Plan,
    *,
    confirm_cost_usd: float | None,
    idempotency_key: str | None,
    asker: Asker,
) -> InputRequiredResult | None:
    """None when the job `plan` describes may start (the same plan is then submitted: planned once).
    On a 2026-07-28 connection whose question is not answered yet, the InputRequiredResult to
    return; on a 2025-era connection the person is asked right here. Raises Cancelled (declined)
    or ConfirmationRequired (a client that cannot ask, unconfirmed)."""
    threshold = svc.settings.confirm_above_usd
    if threshold is None:
        return None
    cost = svc.estimate(plan, tool)
    if not needs_confirmation(threshold, cost):
        return None
    if idempotency_key is not None and await svc.by_key(idempotency_key) is not None:
        return None  # a replay answers with the existing job: nothing new to pay for
    if cost.estimated_usd is not None and await svc.over_budget(cost.estimated_usd):
        return None  # the budget refuses it anyway: do not ask the person for nothing
    label = job_label(plan.spec.id, plan.options, plan.duration)
    if not asker.can_elicit:
        _confirmed_by_argument(label, cost, confirm_cost_usd, threshold)
        return None
    message = f"{label}, {_about(cost)}. Start?"
    if asker.input_required:
        answer = (asker.input_responses or {}).get(CONFIRM_KEY)
        if answer is not None and asker.request_state == _digest(message):
            _answer(answer, label)
            return None
        request = ElicitRequest(
            params=ElicitRequestFormParams(message=message, requested_schema=render_elicitation_schema(ConfirmCost))
        )
        return InputRequiredResult(input_requests={CONFIRM_KEY: request}, request_state=_digest(message))
    try:
        # the raw answer, not elicit_with_validation's: its lax model would read "yes" as true
        result = await asker.session.elicit_form(
            message=message, requested_schema=render_elicitation_schema(ConfirmCost), related_request_id=asker.request_id
        )
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as exc:  # the client's elicitation failed (an error answer, a broken callback)
        raise ConfirmationRequired(
            f"{label} is {_about(cost)}, above STILLMOTION_CONFIRM_ABOVE_USD={threshold:g}, and asking the person "
            f"failed ({type(exc).__name__}); no job was created. Try again, or pass confirm_cost_usd once they agree."
        ) from None
    _answer(result, label)
    return None


def _confirmed_by_argument(label: str, cost: Cost, confirm_cost_usd: float | None, threshold: float) -> None:
    where = f"STILLMOTION_CONFIRM_ABOVE_USD={threshold:g}"
    if cost.estimated_usd is None:
        raise ConfirmationRequired(
            f"{label}: the price is unknown, and jobs above {where} need the person's yes. This client cannot "
            "ask them (no elicitation), and confirm_cost_usd cannot confirm an unknown price: add the model's price "
            "to the STILLMOTION_PRICES file, or use a client that supports elicitation. No job was created."
        )
    if confirm_cost_usd is None or confirm_cost_usd + 1e-9 < cost.estimated_usd:
        got = "" if confirm_cost_usd is None else f" (confirm_cost_usd {confirm_cost_usd:g} is below it)"
        raise ConfirmationRequired(
            f"{label} is estimated at ${cost.estimated_usd:.2f}, above {where}{got}. This client cannot ask "
            f"the person (no elicitation): ask them, and if they agree call again with confirm_cost_usd >= "
            f"{cost.estimated_usd:g}. No job was created."
        )


async def dry_run_result(svc: Service, args: RequestArgs, plan: Plan | None = None) -> CallToolResult:
    plan, cost, preview = await svc.dry_run(args, plan)
    info = CostInfo(estimated_usd=cost.estimated_usd, basis=cost.basis, estimate=cost.estimate, actual_usd=None)
    confirm = needs_confirmation(svc.settings.confirm_above_usd, cost)
    res = DryRunResult(
        tool=args.tool,
        model=plan.spec.id,
        route=plan.route,
        duration=plan.duration,
        cost=info,
        request=ProviderRequest.model_validate(preview),
        needs_confirmation=confirm,
        warnings=plan.warnings,
        next_step="Nothing was created or sent. Call the tool again without dry_run to start the job"
        + (" (it will need the person's confirmation)." if confirm else "."),
    )
    text = (
        f"Dry run of {args.tool} on {plan.spec.id} via {plan.route}, {plan.duration} s: {_about(cost)}. "
        f"{cost.basis}. " + res.next_step
    )
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=res.model_dump(mode="json")
    )


def spend_report(store: Any, settings: Any, principal: Principal | None = None) -> dict[str, Any]:
    """Budget standing and spend by UTC day, model and route (the resource and `stillmotion spend`).

    For everyone (`stillmotion spend`, an admin): the server's budget, every job, and `users` (each
    user's spend in the period). For one user: their own jobs, their own budget, and only what is
    left of the server's (never the other users' spend)."""
    from ..jobs.spend import BudgetRule

    rule = BudgetRule(settings.budget_usd, settings.budget_period) if settings.budget_usd is not None else None
    user_usd = settings.user_budget_usd
    if principal is None or principal.admin:
        per_user = BudgetRule(user_usd, settings.budget_period) if user_usd is not None else None
        report: dict[str, Any] = store.spend(rule, settings.budget_period, user_budget=per_user)
    else:
        mine = BudgetRule(user_usd, settings.budget_period, principal.user) if user_usd is not None else None
        report = store.spend(rule, settings.budget_period, user=principal.user, user_budget=mine)
        server = report.pop("server_budget")
        report["user"] = principal.user
        report["server_budget"] = {k: server[k] for k in ("budget_usd", "period", "left_usd")}
    report["user_budget_usd"] = user_usd
    report["confirm_above_usd"] = settings.confirm_above_usd
    report["prices_file"] = str(settings.prices.path) if settings.prices.path else None
    report["prices"] = settings.prices.table()
    report["kling_usd_per_unit"] = settings.prices.kling_usd_per_unit
    return report


def register_spend_resource(mcp: Any, settings: Any, current: Callable[[], Service | None]) -> None:
    """`current()`: the running service (its store: PostgreSQL on replicas), None outside its lifespan."""

    @mcp.resource(  # type: ignore[untyped-decorator]
        "stillmotion://spend",
        name="spend",
        mime_type="application/json",
        description="Your committed and estimated spend by UTC day, model and route, and the budget left.",
    )
    async def spend_resource() -> str:
        # the server's own store, read on the store's threads, never on the loop; as the asker sees it
        svc, asker = current(), current_asker()
        if svc is None:
            report = await anyio.to_thread.run_sync(read_spend, settings, asker)
        else:
            report = await svc.db.run(spend_report, svc.db.sync, settings, asker)
        return json.dumps(report, indent=1)


def read_spend(settings: Any, principal: Principal | None = None) -> dict[str, Any]:
    """The spend report from the store the settings name (`stillmotion spend`: any process); with a
    principal, as that user sees it."""
    from ..jobs.backends import open_for_settings

    store = open_for_settings(settings, serving=False)
    try:
        return spend_report(store, settings, principal)
    finally:
        store.close()
