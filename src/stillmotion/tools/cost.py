"""The tool layer's cost hooks: `dry_run`, the confirmation above a threshold, and their results.

Hooks for the generation tools (whatever module registers them):

* `cost_params(tool, base_params)` adds `dry_run`, `confirm_cost_usd` and a hidden `confirmation`
  parameter, filled by an SDK resolver *before* the tool body runs. On a 2026-07-28 connection the
  resolver's question travels as an `InputRequiredResult` (the client answers and retries); on a
  2025-era connection as an `elicitation/create` request during the call. The SDK picks the flow.
* `run_generation(...)` is the body: a dry run, or the confirmation gate and then the submission.
* `GENERATION_OUTPUT` is the output schema: a job, or a dry run's own shape.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field, RootModel

from ..catalog import MODELS
from ..errors import Cancelled, ConfirmationRequired, StillmotionError
from ..pricing import Cost
from ..validation import ToolArgs, plan_request
from .results import CostInfo, JobResult

if TYPE_CHECKING:  # avoids an import cycle with service
    from ..service import Service

GEN_EXCLUDED_FROM_FINGERPRINT = ("dry_run", "confirm_cost_usd", "confirmation")


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
    request: ProviderRequest = Field(
        description="What would be sent; <job_id> and base64 images are placeholders; no credentials"
    )
    needs_confirmation: bool
    warnings: list[str] = Field(default_factory=list)
    next_step: str


class GenerationResult(RootModel[JobResult | DryRunResult]):
    """A job, or (dry_run) what would be sent and what it would cost."""


class ConfirmCost(BaseModel):
    start: bool = Field(description="Start the job and pay for it")


@dataclass(frozen=True)
class Verdict:
    """The resolver's answer when it asks nobody."""

    kind: Literal["none", "argument"]
    cost: Cost | None = None
    label: str = ""


def _service(ctx: Context[Any]) -> Service:
    svc: Service = ctx.request_context.lifespan_context
    return svc


def supports_elicitation(ctx: Context[Any]) -> bool:
    caps = ctx.client_capabilities
    el = caps.elicitation if caps is not None else None
    return el is not None and (el.form is not None or el.url is None)


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


def make_confirmation_resolver(
    tool: str, params: list[inspect.Parameter], to_args: Callable[[str, dict[str, Any]], ToolArgs]
) -> Callable[..., Awaitable[Elicit[ConfirmCost] | Verdict]]:
    """A resolver taking the tool's own arguments: asks the person only when it must."""

    async def confirm(**kw: Any) -> Elicit[ConfirmCost] | Verdict:
        ctx: Context[Any] = kw.pop("ctx")
        svc = _service(ctx)
        threshold = svc.settings.confirm_above_usd
        if threshold is None or kw.get("dry_run"):
            return Verdict("none")
        try:
            plan = plan_request(to_args(tool, kw), svc.settings)
        except StillmotionError:
            return Verdict("none")  # the body reports the error itself
        cost = svc.estimate(plan, tool)
        if not needs_confirmation(threshold, cost):
            return Verdict("none")
        key = kw.get("idempotency_key")
        if key is not None and svc.store.by_idempotency_key(key) is not None:
            return Verdict("none")  # a replay answers with the existing job: nothing new to pay for
        rule = svc.budget_rule()
        if rule is not None and cost.estimated_usd is not None:
            left = svc.store.spend(rule, rule.period)["budget"]["left_usd"]
            if left is not None and cost.estimated_usd > left:
                return Verdict("none")  # the budget refuses it anyway: do not ask the person for nothing
        label = job_label(plan.spec.id, plan.options, plan.duration)
        if not supports_elicitation(ctx):
            return Verdict("argument", cost, label)
        return Elicit(f"{label}, {_about(cost)}. Start?", ConfirmCost)

    own = [p for p in params if p.name != "ctx"]
    sig = [*own, inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    confirm.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        sig, return_annotation=Elicit[ConfirmCost] | Verdict
    )
    confirm.__annotations__ = {p.name: p.annotation for p in sig} | {"return": Elicit[ConfirmCost] | Verdict}
    confirm.__name__ = confirm.__qualname__ = f"confirm_cost_{tool}"
    return confirm


DRY_RUN_PARAM = Annotated[bool, Field(description="Check, route and price only: no job, no request sent.")]
CONFIRM_PARAM = Annotated[
    float | None,
    Field(ge=0, description="USD the person approved; needed above the confirm threshold when the client cannot ask."),
]


def cost_params(
    tool: str, params: list[inspect.Parameter], to_args: Callable[[str, dict[str, Any]], ToolArgs]
) -> list[inspect.Parameter]:
    """`params` (the tool's own, without ctx) plus dry_run, confirm_cost_usd and the hidden confirmation."""
    kw = inspect.Parameter.KEYWORD_ONLY
    visible = [
        *params,
        inspect.Parameter("dry_run", kw, default=False, annotation=DRY_RUN_PARAM),
        inspect.Parameter("confirm_cost_usd", kw, default=None, annotation=CONFIRM_PARAM),
    ]
    resolver = make_confirmation_resolver(tool, visible, to_args)
    from mcp.server.elicitation import ElicitationResult

    hidden = inspect.Parameter(
        "confirmation", kw, default=None, annotation=Annotated[ElicitationResult[ConfirmCost], Resolve(resolver)]
    )
    return [*visible, hidden]


def gate(confirmation: Any, confirm_cost_usd: float | None, threshold: float | None) -> None:
    """Raise unless the job may start: declined -> Cancelled; unconfirmed -> ConfirmationRequired."""
    from mcp.server.elicitation import AcceptedElicitation

    if confirmation is None:
        return
    if not isinstance(confirmation, AcceptedElicitation):
        raise Cancelled(f"The person {confirmation.action}d the confirmation; no job was created and nothing was sent."
                        if confirmation.action == "decline"
                        else "The confirmation was cancelled; no job was created and nothing was sent.")
    data = confirmation.data
    if isinstance(data, ConfirmCost):
        if not data.start:
            raise Cancelled("The person said no; no job was created and nothing was sent.")
        return
    if not isinstance(data, Verdict) or data.kind == "none":
        return
    cost = data.cost
    assert cost is not None
    where = f"STILLMOTION_CONFIRM_ABOVE_USD={threshold:g}"
    if cost.estimated_usd is None:
        raise ConfirmationRequired(
            f"{data.label}: the price is unknown, and jobs above {where} need the person's yes. This client cannot "
            "ask them (no elicitation), and confirm_cost_usd cannot confirm an unknown price: add the model's price "
            "to the STILLMOTION_PRICES file, or use a client that supports elicitation. No job was created."
        )
    if confirm_cost_usd is None or confirm_cost_usd + 1e-9 < cost.estimated_usd:
        got = "" if confirm_cost_usd is None else f" (confirm_cost_usd {confirm_cost_usd:g} is below it)"
        raise ConfirmationRequired(
            f"{data.label} is estimated at ${cost.estimated_usd:.2f}, above {where}{got}. This client cannot ask "
            f"the person (no elicitation): ask them, and if they agree call again with confirm_cost_usd >= "
            f"{cost.estimated_usd:g}. No job was created."
        )


async def dry_run_result(svc: Service, args: ToolArgs) -> CallToolResult:
    plan, cost, preview = await svc.dry_run(args)
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


def fix_output_schema(schema: dict[str, Any] | None) -> None:
    """MCP wants `type: object` at the top of an output schema; a union of objects is still one."""
    if schema is not None and "anyOf" in schema:
        schema.setdefault("type", "object")


def spend_report(store: Any, settings: Any) -> dict[str, Any]:
    """Budget standing and spend by UTC day, model and route (the resource and `stillmotion spend`)."""
    from ..jobs.spend import BudgetRule

    rule = BudgetRule(settings.budget_usd, settings.budget_period) if settings.budget_usd is not None else None
    report: dict[str, Any] = store.spend(rule, settings.budget_period)
    report["confirm_above_usd"] = settings.confirm_above_usd
    report["prices_file"] = str(settings.prices.path) if settings.prices.path else None
    return report


def register_spend_resource(mcp: Any, settings: Any) -> None:
    @mcp.resource(  # type: ignore[untyped-decorator]
        "stillmotion://spend",
        name="spend",
        mime_type="application/json",
        description="Committed and estimated spend by UTC day, model and route, and the budget left.",
    )
    def spend_resource() -> str:
        return json.dumps(read_spend(settings), indent=1)


def read_spend(settings: Any) -> dict[str, Any]:
    """The spend report from the home's job store (its own short-lived connection: any process)."""
    from ..jobs.store import open_store

    store = open_store(settings.db_path)
    try:
        return spend_report(store, settings)
    finally:
        store.close()
