"""Strict fake provider servers (KlingAI, DashScope Wan, xAI, Vercel AI Gateway) for tests."""

from .base import FakeServer, Outcome, Recorded, Reply, Task
from .blob import BlobFake
from .gateway import GatewayFake
from .kling import KlingFake
from .media import sample_jpeg, sample_mp4, sample_png, sample_wav
from .wan import WanFake
from .xai import XaiFake

__all__ = [
    "BlobFake",
    "FakeServer",
    "GatewayFake",
    "KlingFake",
    "Outcome",
    "Recorded",
    "Reply",
    "Task",
    "WanFake",
    "XaiFake",
    "sample_jpeg",
    "sample_mp4",
    "sample_png",
    "sample_wav",
]
