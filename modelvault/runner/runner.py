"""Runner: serves one pinned model version; batchable signatures go through a Batcher.

A runner resolves its tag once, when created, and keeps that version. ``init_local()``
loads the model object through its flavour module (``model.info.module``); until then any
call raises :class:`RunnerNotInitialized` (loading is never implicit: it may unpickle).

Each signature of the model is an attribute of the runner (``runner.predict``) with
``run``, ``async_run`` and ``stats``; ``runner.run`` calls the ``"__call__"`` signature.
Calls of the model object are serialised by one lock per runner unless the flavour module
declares ``THREAD_SAFE = True``.

Errors::

    ModelVaultError
     └── RunnerError            (also RuntimeError)  the model cannot be served
          └── RunnerNotInitialized                   called before init_local()
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

from modelvault.archive.bentoml.info import BENTOML_FLAVOURS, flavour_of
from modelvault.errors import BatchingError, InvalidInput, RunnerError, RunnerNotInitialized
from modelvault.runner.batching import Batcher, BatchStats, cut
from modelvault.tags import Tag


class ModelInfoLike(Protocol):
    """What a runner reads of ``Model.info``."""

    @property
    def module(self) -> str: ...

    @property
    def signatures(self) -> Mapping[str, Mapping[str, Any]]: ...


class ModelLike(Protocol):
    """What a runner needs of a model: its pinned tag and its info."""

    @property
    def tag(self) -> Tag: ...

    @property
    def info(self) -> ModelInfoLike: ...


class RunnerMethod:
    """One signature of a runner's model: ``run``, ``async_run`` and ``stats``.

    A batchable signature takes exactly one positional argument, the batch, and merges
    concurrent calls through a :class:`~modelvault.runner.batching.Batcher`. Any other
    signature calls the model's method directly with the arguments given.
    """

    def __init__(self, runner: Runner, name: str, options: Mapping[str, Any]) -> None:
        self.runner = runner
        self.name = name
        self.batchable = bool(options.get("batchable", False))
        self.batch_dim: Any = options.get("batch_dim", 0)
        self._method: Callable[..., Any] | None = None
        self._stats = BatchStats()
        self._stats_lock = threading.Lock()
        self._batcher: Batcher | None = None
        if self.batchable:  # created now so that bad options fail when the runner is made
            self._batcher = Batcher(
                self._call_model,
                max_batch_size=runner.max_batch_size,
                max_latency_ms=runner.max_latency_ms,
                batch_dim=self.batch_dim,
                name=f"{runner.name}.{name}",
            )

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Call the signature and wait for the result.

        Raises:
            RunnerNotInitialized: ``init_local()`` was not called.
            TypeError: a batchable signature was not given exactly one positional argument.
            BatchingError: the batch cannot be cut along ``batch_dim`` (a ValueError).
            BatcherClosed: the runner was closed.
            Exception: whatever the model raised.
        """
        self._require_loaded()
        if self._batcher is not None:
            return self._batcher.submit(self._single(args, kwargs))
        return self._call_direct(args, kwargs)

    async def async_run(self, *args: Any, **kwargs: Any) -> Any:
        """Like :meth:`run`, without blocking the event loop (same errors)."""
        self._require_loaded()
        if self._batcher is not None:
            return await self._batcher.submit_async(self._single(args, kwargs))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._call_direct, args, kwargs)

    @property
    def stats(self) -> BatchStats:
        """``calls`` of the model method and ``batch_sizes``, the rows of each call.

        For a signature that is not batchable, a call's size is the rows of its first
        argument along ``batch_dim``, or 1 when that cannot be told.
        """
        if self._batcher is not None:
            return self._batcher.stats
        with self._stats_lock:
            return BatchStats(self._stats.calls, list(self._stats.batch_sizes))

    @property
    def pending(self) -> int:
        """How many batched calls are queued, waiting for their batch to run."""
        return 0 if self._batcher is None else self._batcher.pending

    def close(self) -> None:
        """Stop the batcher's worker, if any; later calls raise BatcherClosed."""
        if self._batcher is not None:
            self._batcher.close()

    def _bind(self, model_object: object, lock: threading.Lock | None) -> None:
        method = getattr(model_object, self.name, None)
        if not callable(method):
            raise RunnerError(
                f"model {self.runner.tag} has signature {self.name!r} but its loaded "
                f"{type(model_object).__name__} object has no such method"
            )
        self._method = method if lock is None else _serialised(method, lock)

    def _require_loaded(self) -> None:
        if self._method is None:
            raise RunnerNotInitialized(
                f"runner {self.runner.name!r} is not initialised: call runner.init_local() first"
            )

    def _single(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        if len(args) != 1 or kwargs:
            raise TypeError(
                f"{self.runner.name}.{self.name} is batchable: pass exactly one positional "
                f"argument, the batch (got {len(args)} positional, {len(kwargs)} keyword)"
            )
        return args[0]

    def _call_model(self, batch: Any) -> Any:
        self._require_loaded()
        assert self._method is not None  # for the type checker: checked just above
        return self._method(batch)

    def _call_direct(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        assert self._method is not None  # run/async_run checked it
        try:
            return self._method(*args, **kwargs)
        finally:
            with self._stats_lock:
                self._stats.calls += 1
                self._stats.batch_sizes.append(self._size_of(args))

    def _size_of(self, args: tuple[Any, ...]) -> int:
        dim = self.batch_dim if isinstance(self.batch_dim, int) else self.batch_dim[0]
        try:
            return cut(args[0], dim).rows if args else 1
        except BatchingError:
            return 1


def _serialised(method: Callable[..., Any], lock: threading.Lock) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return method(*args, **kwargs)

    return call


class Runner:
    """Serves one model version; its signatures are attributes (``runner.predict``).

    This class takes a Model (``Model.to_runner()`` makes one). ``modelvault.Runner`` (the
    subclass in :mod:`modelvault.serving`) also takes a tag and resolves it.

    Args:
        model: a model already got (anything with ``tag``, ``info``, ``path`` and
            ``custom_objects``).
        max_batch_size: most rows along ``batch_dim`` in one call of the model.
        max_latency_ms: the most a call is held waiting for company, call time included.
        name: the runner's name; defaults to the model's name.

    Raises:
        RunnerError: the model was saved by a BentoML framework module modelvault has
            no flavour for (imported from BentoML).
        InvalidInput: an option or a signature's ``batch_dim`` is out of range.
    """

    def __init__(
        self,
        model: ModelLike,
        *,
        max_batch_size: int = 100,
        max_latency_ms: float = 10000,
        name: str | None = None,
    ) -> None:
        self.model: ModelLike = _resolve(model)
        self.tag: Tag = self.model.tag
        _check_flavoured(self.model)
        self.name = name or self.tag.name
        self.max_batch_size = max_batch_size
        self.max_latency_ms = max_latency_ms
        signatures = self.model.info.signatures
        self.methods: dict[str, RunnerMethod] = {
            sig: RunnerMethod(self, sig, options) for sig, options in signatures.items()
        }
        self._init_lock = threading.Lock()
        self._loaded = False

    @property
    def initialized(self) -> bool:
        """Whether ``init_local()`` has loaded the model."""
        return self._loaded

    def init_local(self) -> None:
        """Load the model object through its flavour module; a second call does nothing.

        Raises:
            RunnerError: the model names no flavour module, the module has no
                ``load_model``, or the loaded object lacks a signature's method.
            ImportError: the flavour module (or its framework) cannot be imported.
            Exception: whatever the flavour's ``load_model`` raised.
        """
        with self._init_lock:
            if self._loaded:
                return
            flavour = self._flavour()
            model_object = flavour.load_model(self.model)
            lock = None if getattr(flavour, "THREAD_SAFE", False) else threading.Lock()
            for method in self.methods.values():
                method._bind(model_object, lock)
            self._loaded = True

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Call the ``"__call__"`` signature (see :meth:`RunnerMethod.run`).

        Raises:
            AttributeError: the model has no ``"__call__"`` signature.
        """
        return self._signature("__call__").run(*args, **kwargs)

    async def async_run(self, *args: Any, **kwargs: Any) -> Any:
        """Call the ``"__call__"`` signature without blocking the event loop."""
        return await self._signature("__call__").async_run(*args, **kwargs)

    def close(self) -> None:
        """Stop the runner's batchers; later calls raise BatcherClosed."""
        for method in self.methods.values():
            method.close()

    def __getattr__(self, name: str) -> RunnerMethod:
        # Only reached when normal lookup fails: signature names become attributes.
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._signature(name)

    def __repr__(self) -> str:
        return f"Runner({self.name!r}, tag={str(self.tag)!r}, signatures={list(self.methods)})"

    def _signature(self, name: str) -> RunnerMethod:
        methods: dict[str, RunnerMethod] = self.__dict__.get("methods", {})
        if name not in methods:
            raise AttributeError(
                f"model {self.__dict__.get('tag')} has no signature {name!r}; "
                f"its signatures are: {', '.join(methods) or 'none'}"
            )
        return methods[name]

    def _flavour(self) -> Any:
        saved_by = self.model.info.module
        if not saved_by:
            raise RunnerError(f"model {self.tag} was saved without a flavour module to load it")
        _check_flavoured(self.model)
        module_name = flavour_of(saved_by) or saved_by  # BentoML's modules map to modelvault's
        flavour = importlib.import_module(module_name)
        if not callable(getattr(flavour, "load_model", None)):
            raise RunnerError(f"flavour module {module_name!r} has no load_model(model)")
        return flavour


def _check_flavoured(model: ModelLike) -> None:
    """RunnerError if ``model`` was saved by a BentoML framework modelvault has no flavour
    for (an imported BentoML model: ``archive.bentoml.BENTOML_FLAVOURS``)."""
    saved_by = model.info.module
    if saved_by and flavour_of(saved_by) is None:
        have = ", ".join(sorted(set(BENTOML_FLAVOURS.values())))
        raise RunnerError(
            f"model {model.tag} was saved by BentoML's {saved_by}: modelvault has no flavour "
            f"for it (its flavours are {have}), so it cannot be served by a Runner; read its "
            "files from Model.path and load them with that framework"
        )


def _resolve(model: object) -> ModelLike:
    """The Model given; a tag is the façade's to resolve (``modelvault.Runner``)."""
    if isinstance(model, str | Tag):
        raise InvalidInput(
            f"modelvault.runner.Runner takes a Model, not the tag {str(model)!r}: use "
            "modelvault.Runner(tag), which resolves it, or Model.to_runner()"
        )
    if not all(hasattr(model, a) for a in ("tag", "info")):
        raise InvalidInput(f'Runner takes a tag ("name:version") or a Model, not {model!r}')
    return cast("ModelLike", model)  # duck-typed: tag and info checked


__all__ = ["ModelLike", "Runner", "RunnerError", "RunnerMethod", "RunnerNotInitialized"]
