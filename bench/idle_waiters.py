"""Server CPU of agents that wait: 500 jobs running elsewhere, 500 ``check_job`` waits (``Service.wait``)
of 10 s each, in-process, no provider traffic. Isolates what waiting costs (change events, the
claim scan, the heartbeat and the store watch) from polling and publishing.

    PYTHONPATH=src python -m bench.idle_waiters
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

from stillmotion.jobs.store import new_job_id
from stillmotion.service import Service
from stillmotion.settings import Settings

REQUEST = {
    "tool": "animate_image", "model": "klingai/kling-v2.1-i2v", "route": "direct", "prompt": "The camera slowly pushes in",
    "image": {"path": "/tmp/x/image.png", "url": None, "mime": "image/png", "width": 640, "height": 480, "bytes": 1,
              "sha256": "a" * 64},
    "poll_interval_ms": 500, "poll_timeout_ms": 900_000, "duration": 5,
}


async def measure(n: int = 500, wait_s: float = 10.0) -> float:
    """CPU seconds of this process while `n` waits of `wait_s` run on `n` jobs another process owns."""
    home = Path(tempfile.mkdtemp(prefix="stillmotion-idle-"))
    settings = Settings.from_env({"STILLMOTION_HOME": str(home), "STILLMOTION_BACKGROUND": "0"}, transport="stdio")
    async with httpx.AsyncClient() as client:
        svc = Service.create(settings, client)
        ids = [
            svc.store.create(job_id=new_job_id(), tool="animate_image", model="m", route="direct", request=REQUEST,
                             args_hash="h", idempotency_key=None, warnings=[], owner="elsewhere:1:1:x",
                             lease_s=3600).id
            for _ in range(n)
        ]
        async with anyio.create_task_group() as tg:
            await svc.start(tg)
            t0 = time.process_time()
            async with anyio.create_task_group() as waiters:
                for job_id in ids:
                    waiters.start_soon(svc.wait, job_id, wait_s)
            cpu = time.process_time() - t0
            svc.runner.stop()
            tg.cancel_scope.cancel()
        svc.store.close()
    return cpu


def main() -> None:
    cpu = anyio.run(measure)
    print(f"500 waits x 10 s on 500 running jobs: {cpu:.2f} s CPU ({cpu / 10 * 1000:.0f} ms per second)", file=sys.stderr)


if __name__ == "__main__":
    main()
