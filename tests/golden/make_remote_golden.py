"""Write a golden file:// remote of the current layout format: ``python
make_remote_golden.py 1`` wrote tests/golden/remote-v1 (format 1, golden:v1), ``... 3``
writes tests/golden/remote-v3 (format 3: golden:v1, the remote alias golden@prod naming
it, and a ref deleted by delete_remote, whose objects remote gc has freed).

Run once when a remote layout version is introduced, with the code of that version;
tests read each with every later version. The source is the golden store of
tests/golden/store-v1.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent


def main(version: int) -> None:
    sys.path.insert(0, str(HERE.parent.parent))
    import modelvault
    from modelvault.remote.repo import FORMAT

    if version != FORMAT:
        raise SystemExit(f"this code writes remote format {FORMAT}, not {version}")
    target = HERE / f"remote-v{version}"
    shutil.rmtree(target, ignore_errors=True)
    url = target.absolute().as_uri()
    with tempfile.TemporaryDirectory() as tmp:
        store = modelvault.Store(Path(shutil.copytree(HERE / "store-v1", Path(tmp) / "s")))
        store.push("golden:v1", url)
        if version >= 3:
            src = Path(tmp) / "gone"
            src.mkdir()
            (src / "w.bin").write_bytes(b"deleted again" * 4096)
            store.save(src, "gone:v1")
            store.push("gone:v1", url)
            store.delete_remote("gone", url)
            store.gc_remote(url)
            store.set_alias("golden:v1", "prod")
            store.push("golden@prod", url)
    for p in target.rglob("*"):
        if p.is_file() and p.name.startswith(".tmp-"):  # temporaries: not the layout
            p.unlink()
        elif p.is_file():
            p.chmod(0o644)
    marker = json.loads((target / "modelvault.json").read_text())
    assert marker == {"format": version}, marker


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
