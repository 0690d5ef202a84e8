"""make demo: the main job of modelvault, end to end, on a local store.

1. save a real scikit-learn model, load it back and run a prediction;
2. save a 5-version family of a ~200 MB safetensors weights file (each version
   changes ~10% of the tensors and shifts every byte offset) with the `mv` CLI;
3. list them, print the dedup ratio, check one out and compare it byte for byte.

Everything lives under demo/out/ (delete it to start over).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo" / "out"
STORE = OUT / "store"
FAMILY = OUT / "family"
MV = str(Path(sys.executable).parent / "mv")
MIB = 1024 * 1024


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def mv(*args: str) -> str:
    """Run the installed `mv` CLI on the demo store and echo what it prints."""
    print("$ mv " + " ".join(args), flush=True)
    done = subprocess.run([MV, *args], check=True, capture_output=True, text=True)
    print(done.stdout, end="", flush=True)
    return done.stdout


def digest(folder: Path) -> str:
    h = hashlib.blake2b()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            with open(p, "rb") as f:
                while block := f.read(4 * MIB):
                    h.update(block)
    return h.hexdigest()


def sklearn_part() -> None:
    from sklearn import svm
    from sklearn.datasets import load_iris

    import modelvault

    step("train and save a scikit-learn model")
    x, y = load_iris(return_X_y=True)
    clf = svm.SVC(gamma="scale").fit(x, y)
    model = modelvault.sklearn.save_model(
        "iris_clf", clf, labels={"owner": "demo"}, metadata={"train_acc": float(clf.score(x, y))}
    )
    print(f"saved {model.tag} ({model.size} bytes)")
    step("load it back and predict")
    loaded = modelvault.sklearn.load_model("iris_clf:latest")
    sample = [[5.9, 3.0, 5.1, 1.8]]
    print(f"predict({sample}) = {loaded.predict(sample).tolist()}")
    assert loaded.predict(sample).tolist() == clf.predict(sample).tolist()


def family_part() -> None:
    import modelvault

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from workload import generate_family

    step("generate a 5-version family of a ~200 MB weights file (cached in demo/out/family)")
    manifest = generate_family(FAMILY, size_mib=200, versions=5)
    step("save every version with the CLI")
    for folder in manifest.folders:
        t = time.perf_counter()
        mv("save", "-q", str(FAMILY / folder), f"llm:{folder}")
        print(f"   ({time.perf_counter() - t:.1f} s)")
    step("list the store")
    mv("list")
    step("logical vs stored bytes")
    mv("du")
    stats = modelvault.Store(STORE).stats()
    base = manifest.folder_bytes[0]
    plain = sum(manifest.folder_bytes)
    print(
        f"{stats.models} models: {stats.logical_bytes / MIB:.0f} MiB of files stored in "
        f"{stats.stored_bytes / MIB:.0f} MiB (dedup ratio {stats.dedup_ratio:.2f}x; "
        f"plain copies would take {plain / MIB:.0f} MiB, the base alone {base / MIB:.0f} MiB)"
    )
    step("check out llm:v3 and compare it with the original folder")
    dest = OUT / "checkout-v3"
    shutil.rmtree(dest, ignore_errors=True)
    mv("checkout", "llm:v3", str(dest))
    same = digest(dest) == digest(FAMILY / "v3")
    print(f"byte-identical: {same}")
    assert same
    step("verify every stored byte")
    mv("verify")


def main() -> None:
    shutil.rmtree(STORE, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ["MODELVAULT_HOME"] = str(STORE)
    sklearn_part()
    family_part()
    print("\ndemo finished: store in", STORE)


if __name__ == "__main__":
    main()
