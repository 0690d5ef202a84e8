"""Write tests/golden/remote-v1: a file:// remote of layout format 1 holding golden:v1.

Run once when a remote layout version is introduced; tests pull from it with every
later version. The source is the golden store of tests/golden/store-v1.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
TARGET = HERE / "remote-v1"


def main() -> None:
    sys.path.insert(0, str(HERE.parent.parent))
    import modelvault

    shutil.rmtree(TARGET, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = modelvault.Store(Path(shutil.copytree(HERE / "store-v1", Path(tmp) / "s")))
        store.push("golden:v1", TARGET.absolute().as_uri())
    for p in TARGET.rglob("*"):
        if p.is_file():
            p.chmod(0o644)


if __name__ == "__main__":
    main()
