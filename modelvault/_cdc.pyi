from collections.abc import Sequence

from typing_extensions import Buffer

MIN_SIZE: int
AVG_SIZE: int
MAX_SIZE: int
BLAKE3_VERSION: str

def cut_hash(
    buf: Buffer, stop: int, kind: int, skip: int = 0, /
) -> tuple[int, list[int], bytes]: ...
def object_id(kind: int, data: Buffer, /) -> bytes: ...
def object_ids(kind: int, data: Buffer, ends: Sequence[int], /) -> bytes: ...
def screen(buf: Buffer, offset: int, blocks: int, ids: Buffer, /) -> bytes: ...
