from collections.abc import Sequence

from typing_extensions import Buffer

def split(data: Buffer, width: int, rot: int, /) -> bytes: ...
def join(
    width: int, rot: int, head: Buffer, planes: Sequence[Buffer], tail: Buffer, /
) -> bytes: ...
def probe(
    data: Buffer, width: int = 0, /
) -> tuple[float, list[tuple[int, int, tuple[float, ...], tuple[float, ...]]]]: ...
