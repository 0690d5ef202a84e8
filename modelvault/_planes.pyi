from collections.abc import Sequence

from typing_extensions import Buffer

def interleave(out: Buffer, lanes: Sequence[Buffer], /) -> None: ...
