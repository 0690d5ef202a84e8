"""``modelvault.Runner``: a runner made from a tag or a model (API.md, Runner).

The runner itself (:class:`modelvault.runner.Runner`, the mechanisms floor) takes a Model;
this façade class also takes a tag (``"iris_clf:latest"``, ``"iris_clf@prod"``, a
:class:`~modelvault.Tag`) and resolves it now in the default store, as
``modelvault.models.get`` does, so the runner keeps that version (moving the alias or
saving a newer version later does not move it).
"""

from __future__ import annotations

from typing import Any

from modelvault import runner
from modelvault.tags import Tag

__all__ = ["Runner"]


class Runner(runner.Runner):
    """A :class:`modelvault.runner.Runner` that also takes a tag.

    Raises:
        NotFound: the tag names no model.
        InvalidTag: the tag is malformed.
        (and what :class:`modelvault.runner.Runner` raises)
    """

    def __init__(self, model: str | Tag | runner.ModelLike, **options: Any) -> None:
        if isinstance(model, str | Tag):
            from modelvault import models

            model = models.get(model)
        super().__init__(model, **options)
