"""The provider interface every route implements.

A provider is a mapping between a `GenerationRequest` and one HTTP API. It never sleeps, polls
or retries: polling, retries, timeouts, idempotency and downloads live once, in `jobs/runner.py`.

    create_request(job)     -> WireRequest(method, url, headers, body)   (start sends it; the dry run shows it)
    start(job)              -> StartResult(operation, provider_task_id, warnings[, completed])
    status(job, operation)  -> Status(pending | completed | failed, progress, video)
    recover(job)            -> StartResult | None   (after a crash or a lost create answer)

`operation` is opaque, JSON-serialisable and enough to resume from another process. A provider
whose started job cannot be resumed (the Gateway's single streamed call) returns `completed`
straight from `start` and raises `Interrupted` from `status`.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx

from ..catalog import CAMERA_AXES
from ..errors import MissingCredentials, StillmotionError
from ..plan.requests import CameraControl, GenerationRequest, StoredClip, StoredImage
from ..pricing import ActualCost
from ..settings import Settings
from ._http import WireRequest
from .families import ENDPOINTS


@dataclass
class VideoResult:
    url: str | None = None
    data_b64: str | None = None
    media_type: str = "video/mp4"
    url_expires_at: float | None = None


@dataclass
class Status:
    state: Literal["pending", "completed", "failed"]
    progress: float | None = None
    """0-1 when the provider reports it."""
    video: VideoResult | None = None
    error: StillmotionError | None = None
    actual: ActualCost | None = None
    """The cost the provider's answer reports, when it reports one."""


@dataclass
class ListedTask:
    """One entry of a provider's task list."""

    task_id: str
    created_at: float | None
    """Epoch seconds, when the list says."""
    status: Status
    external_id: str | None = None
    """The caller's own id for the task (Kling's `external_task_id`), when the list shows one."""
    updated_at: float | None = None
    """Epoch seconds of the task's last change, when the list says (a row that never changes is frozen)."""


@dataclass
class StartResult:
    operation: dict[str, Any]
    provider_task_id: str | None = None
    warnings: list[str] = field(default_factory=list)
    completed: Status | None = None
    """Set when the provider finished the whole generation inside start (streamed flows)."""


@dataclass
class JobContext:
    job_id: str
    request: GenerationRequest

    def image_bytes(self, image: StoredImage) -> bytes:
        return Path(image.path).read_bytes()

    def raw_b64(self, image: StoredImage) -> str:
        return base64.b64encode(self.image_bytes(image)).decode("ascii")

    def data_uri(self, image: StoredImage) -> str:
        return f"data:{image.mime};base64,{self.raw_b64(image)}"

    def url_or_raw_b64(self, image: StoredImage) -> str:
        """Kling's form: the original URL if there was one, else base64 with no data: prefix."""
        return image.url or self.raw_b64(image)

    def url_or_data_uri(self, image: StoredImage) -> str:
        """Wan's and xAI's form: the original URL if there was one, else a data: URI."""
        return image.url or self.data_uri(image)

    def gateway_file(self, image: StoredImage) -> dict[str, Any]:
        """An image as the AI SDK takes it: `{type: url, url}`, else inline (`gateway_inline`)."""
        return {"type": "url", "url": image.url} if image.url else self.gateway_inline(image)

    def gateway_inline(self, image: StoredImage) -> dict[str, Any]:
        """An image as the AI SDK's inline file: `{type: file, mediaType, data: <raw base64>}`."""
        return {"type": "file", "mediaType": image.mime, "data": self.raw_b64(image)}

    def video_url_or_data_uri(self, clip: StoredClip) -> str:
        """A source video as xAI's extension takes it: its http(s) URL, else the MP4 as a data: URI."""
        if clip.source.startswith(("http://", "https://")):
            return clip.source
        return "data:video/mp4;base64," + base64.b64encode(Path(clip.path).read_bytes()).decode("ascii")


def camera_payload(camera: CameraControl) -> dict[str, Any]:
    """Kling's camera control object (the Gateway forwards the same shape): all six axes as floats."""
    out: dict[str, Any] = {"type": camera.type}
    if camera.config is not None:
        out["config"] = {axis: float(getattr(camera.config, axis)) for axis in CAMERA_AXES}
    return out


def trajectory_payload(points: list[tuple[float, float]]) -> list[dict[str, int]]:
    """Kling wants integer pixels (origin bottom-left, as the tool takes them)."""
    return [{"x": round(x), "y": round(y)} for x, y in points]


class Provider(ABC):
    """A remote route. `name` is the catalog provider; `route` is direct or gateway."""

    name: str
    route: Literal["direct", "gateway"]

    def __init__(self, client: httpx.AsyncClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    @property
    def _base(self) -> str:
        """The configured base URL of this route (`settings.base_urls` is keyed by provider name)."""
        return self.settings.base_urls[self.name].rstrip("/")

    #: Headers besides the credentials: on a create request, and on every other request.
    create_headers: ClassVar[dict[str, str]] = {"Content-Type": "application/json"}
    poll_headers: ClassVar[dict[str, str]] = {}

    def _authorization(self) -> str:
        """This route's (first) credential as a Bearer token; MissingCredentials names its variables."""
        endpoint = ENDPOINTS[self.name]
        secret = self.settings.keys.get(endpoint.keys[0][0])
        if secret is None:
            raise MissingCredentials(f"{endpoint.label} needs {endpoint.key_hint}.")
        return f"Bearer {secret.reveal()}"

    def _headers(self, *, create: bool = False) -> dict[str, str]:
        return {"Authorization": self._authorization(), **(self.create_headers if create else self.poll_headers)}

    #: A line the dry run adds to the create request it shows (None: nothing to add).
    create_note: str | None = None

    def extends_video(self, job: JobContext) -> bool:
        """`extend_video` through the provider's own extension (its registry entry's `extension`):
        the answer is already the source and its continuation, so nothing is joined."""
        return False

    @abstractmethod
    def create_request(self, job: JobContext) -> WireRequest:
        """The create request `start` sends for this job, built without sending anything."""

    @abstractmethod
    async def start(self, job: JobContext) -> StartResult: ...

    @abstractmethod
    async def status(self, job: JobContext, operation: dict[str, Any]) -> Status: ...

    async def recover(self, job: JobContext) -> StartResult | None:
        """Find a task whose create answer was lost. None = cannot be looked up (never resubmit)."""
        return None

    # -- listing many tasks at once (optional) ----------------------------------------------

    #: The largest page the provider's task list serves; 0 = the provider has no task list.
    list_page_max: int = 0

    def list_key(self) -> str | None:
        """Tasks whose status one list request can answer share this key (the account and
        endpoint); None when this route has no task list."""
        return None

    @staticmethod
    def task_id(operation: dict[str, Any]) -> str | None:
        """The provider's task id in an operation (what a list page names)."""
        tid = operation.get("task_id")
        return str(tid) if tid else None

    def list_external_id(self, job: JobContext) -> str | None:
        """The external id a listed row of this job's task must carry to be used (None: rows carry
        none and the task id alone identifies them)."""
        return None

    async def status_page(self, page: int, size: int) -> list[ListedTask]:
        """One page (1-based) of the account's tasks, newest first."""
        raise NotImplementedError(f"{self.name} has no task list")
