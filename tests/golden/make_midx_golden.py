"""Write tests/golden/midx-v2: a version-2 multi-pack index (with its filter,
docs/format.md section 5.1) over the eight packs the version-1 index of
tests/golden/store-v3 covers.

Run once (the format's version 2 was introduced in session 12); the test puts it in
place of store-v3's own index, reads the store through it, and checks that today's code
writes the same bytes from the same packs.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
TARGET = HERE / "midx-v2"


def main() -> None:
    sys.path.insert(0, str(HERE.parent.parent))
    from modelvault.odb.midx import MultiIndex, write_midx

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        shutil.copytree(HERE / "store-v3", store)
        packs = store / "objects" / "packs"
        [old] = packs.glob("multi-*.midx")
        covered = MultiIndex(old).packs
        old.unlink()
        (store / "objects" / "tmp").mkdir(exist_ok=True)
        new = write_midx(packs, store / "objects" / "tmp", [], covered)
        assert new is not None and new.version == 2
        shutil.rmtree(TARGET, ignore_errors=True)
        TARGET.mkdir()
        shutil.copyfile(new.path, TARGET / new.name)
        (TARGET / new.name).chmod(0o644)


if __name__ == "__main__":
    main()
