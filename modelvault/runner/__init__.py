"""Serving models: adaptive batching of concurrent calls (batching) and the Runner (runner).

``batching`` knows nothing of the store; ``runner`` binds a pinned model version to it.
"""

from __future__ import annotations

from modelvault.errors import BatcherClosed, BatchingError, RunnerError, RunnerNotInitialized
from modelvault.runner.batching import AdaptivePolicy, BatchDim, Batcher, BatchStats
from modelvault.runner.runner import ModelLike, Runner, RunnerMethod

__all__ = [
    "AdaptivePolicy",
    "BatchDim",
    "BatchStats",
    "Batcher",
    "BatcherClosed",
    "BatchingError",
    "ModelLike",
    "Runner",
    "RunnerError",
    "RunnerMethod",
    "RunnerNotInitialized",
]
