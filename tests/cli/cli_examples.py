"""Make, or check, the ``console`` examples of docs/cli.md by running the installed ``mv``.

    python tests/cli/cli_examples.py            # rewrite the examples (``make docs-examples``)
    python tests/cli/cli_examples.py --check    # exit 1 with a diff when they differ

Each generated block in docs/cli.md is a fence right after an ``<!-- example: NAME -->``
comment; everything else in the file (the prose, hand-written blocks) is left as it is.
The examples run in one order (``EXAMPLES``) in one sandbox: a temporary folder standing
for the user's home (``$HOME``, the current folder, ``$MODELVAULT_HOME`` = ``~/modelvault``,
``$BENTOML_HOME`` = ``~/bentoml`` holding tests/golden/bentoml/home), seeded model folders
(so sizes and object ids are the same on every run) and ``file://`` remotes in it. No
network. Commands run through the console script next to this Python, with stdout and
stderr in one stream as a terminal shows them (no progress bar: stderr is not a terminal).

What differs between runs is shown as fixed placeholders, in the docs and in the check
alike: the sandbox's path as ``/home/me``, creation times as ``2026-05-19 08:36:52`` (or
its ISO form), versions modelvault picks as ``gsa5ibwdy5tw6dh4``..., model ids (hashes of
the model document, which holds the creation time) as fixed hex of the same length, and
the Python version. Commands in ``EXAMPLES`` are written as the docs show them; the
placeholders in them are turned back into the real values before they run. The store's
total stored bytes in ``mv du -o json`` (pack files: how a save's threads spread objects
over packs varies) are shown as one run printed them and left out of the comparison.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelvault.repo.layout import StoreLayout

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "cli.md"
BENTOML_HOME = ROOT / "tests" / "golden" / "bentoml" / "home"

SHOWN_HOME = "/home/me"
SHOWN_TIME = "2026-05-19 08:36:52"
SHOWN_ISO = "2026-05-19T08:36:52.456990+00:00"
SHOWN_PYTHON = "3.11.7"
# versions modelvault picks, in the order they appear (the first is the one in the docs)
SHOWN_VERSIONS = ("gsa5ibwdy5tw6dh4", "hq2m7xkd4nrz5c2a", "jt3w6lpe5ouy7d3b")

_LOCAL_TIME = re.compile(r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\b")
_ISO_TIME = re.compile(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?\+00:00")
_PYTHON = re.compile(r"(python_version: )'?\d+\.\d+\.\d+'?")
_SAVED = re.compile(r'Model\(tag="([a-z0-9_.\-]+):([a-z0-9_.\-]+)"\) saved')
# The store's total stored bytes count pack files, and how a save's threads spread its
# objects over packs (and which packs gc merges) differs from run to run by some bytes:
# the check compares everything but these two numbers of `mv du -o json`.
_VOLATILE = re.compile(r'("stored_bytes": )\d+(,\n\s*"dedup_ratio": )[0-9.]+')
_BLOCK = re.compile(
    r"(?P<head><!-- example: (?P<name>[a-z0-9\-]+) -->\n```console\n)(?P<body>.*?)(?P<tail>^```$)",
    re.S | re.M,
)

Action = Callable[["Sandbox"], None]


@dataclass(frozen=True)
class Hidden:
    """A step run between the commands shown but not shown: an ``mv`` line or a function."""

    step: str | Action


@dataclass
class Example:
    """One block: the commands shown (with their exit status when it is not 0), and hidden
    steps run before, between and after them."""

    name: str
    commands: Sequence[str | tuple[str, int] | Hidden]
    before: Sequence[str | Action] = ()
    after: Sequence[str | Action] = ()


@dataclass
class Sandbox:
    """The temporary home the examples run in, and what maps its real values to shown ones."""

    home: Path
    mv: str
    shown: dict[str, str] = field(default_factory=dict)  # real text -> shown text
    ids: dict[str, str] = field(default_factory=dict)  # real model id -> shown id

    @property
    def store(self) -> Path:
        return self.home / "modelvault"

    def env(self) -> dict[str, str]:
        drop = ("MODELVAULT_REMOTE", "MODELVAULT_DEBUG", "MODELVAULT_HOME", "BENTOML_HOME")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(
            HOME=str(self.home),
            MODELVAULT_HOME=str(self.store),
            BENTOML_HOME=str(self.home / "bentoml"),
            NO_COLOR="1",
            PYTHONUNBUFFERED="1",  # stdout and stderr interleaved as on a terminal
            LC_ALL="C.UTF-8",
            COLUMNS="100",
        )
        return env

    def real(self, text: str) -> str:
        """A command as shown, with the placeholders turned back into the real values."""
        for real, shown in sorted(self.shown.items(), key=lambda kv: -len(kv[1])):
            text = text.replace(shown, real)
        return text

    def normalise(self, text: str) -> str:
        """Output as the docs show it (see the module docstring)."""
        text = _retable(text, self._substitute)
        text = self._substitute(text)
        text = _ISO_TIME.sub(SHOWN_ISO, text)
        text = _LOCAL_TIME.sub(SHOWN_TIME, text)
        text = _PYTHON.sub(rf"\g<1>{SHOWN_PYTHON}", text)
        for real, shown in self.ids.items():
            text = text.replace(real, shown)
        return text

    def _substitute(self, text: str) -> str:
        for real, shown in sorted(self.shown.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(real, shown)
        return text

    def run(self, line: str, status: int = 0) -> str:
        """Run one command line as shown (``mv ...``, optionally after ``VAR=value``);
        returns its output as shown. Raises when its exit status is not ``status``."""
        words = shlex.split(self.real(line), comments=True)
        env = self.env()
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        if not words or words[0] != "mv":
            raise ValueError(f"an example runs mv: {line!r}")
        done = subprocess.run(
            [self.mv, *words[1:]],
            cwd=self.home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )
        if done.returncode != status:
            raise RuntimeError(
                f"`{line}` exited {done.returncode}, the example expects {status}:\n{done.stdout}"
            )
        self._learn(words, done.stdout)
        return self.normalise(done.stdout)

    def _learn(self, words: list[str], output: str) -> None:
        """Register the values of this run that another run would not repeat."""
        if len(words) > 1 and words[1] == "save":
            for _name, version in _SAVED.findall(output):
                if version not in self.shown and not any(f":{version}" in w for w in words):
                    picked = [v for v in self.shown.values() if v in SHOWN_VERSIONS]
                    self.shown[version] = SHOWN_VERSIONS[len(picked)]
        for model_id in re.findall(r"\b[0-9a-f]{64}\b", output):
            if model_id not in self.ids:
                seed = f"modelvault docs example id {len(self.ids)}".encode()
                self.ids[model_id] = hashlib.sha256(seed).hexdigest()


def _retable(text: str, substitute: Callable[[str], str]) -> str:
    """A table whose cells ``substitute`` changes, padded again as ``mv`` pads its tables
    (``mv remote list`` shows the sandbox's path, which is longer than ``/home/me``)."""
    lines = text.split("\n")
    head = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", head)]
    if len(starts) < 2 or substitute(text) == text or substitute(head) != head:
        return text
    end = next((i for i, line in enumerate(lines) if not line), len(lines))
    rows = [
        [line[a:b].rstrip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        for line in lines[:end]
    ]
    rows = [[substitute(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(starts))]
    table = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([*(line.rstrip() for line in table), *lines[end:]])


# -- the sandbox's contents ------------------------------------------------------------
def _bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make_iris(sb: Sandbox) -> None:
    """A small scikit-learn-like model: one pickle."""
    _write(sb.home / "iris_clf" / "saved_model.pkl", _bytes(1, 5_949))


def make_bert_v2(sb: Sandbox) -> None:
    """A BERT-like folder: config, tokenizer files and 3 MiB of weights."""
    folder = sb.home / "out" / "bert"
    _write(folder / "config.json", b'{"hidden_size": 768, "num_layers": 12}\n')
    _write(folder / "tokenizer" / "vocab.txt", b"\n".join(b"tok%d" % i for i in range(2000)))
    _write(folder / "tokenizer" / "merges.txt", b"\n".join(b"m%d m%d" % (i, i) for i in range(500)))
    _write(folder / "weights.bin", _bytes(2, 3 * 1024 * 1024))


def make_bert_v3(sb: Sandbox) -> None:
    """The next version: the last MiB of weights retrained, merges dropped, a card added."""
    folder = sb.home / "out" / "bert"
    weights = bytearray(_bytes(2, 3 * 1024 * 1024))
    weights[2 * 1024 * 1024 :] = _bytes(3, 1024 * 1024)
    _write(folder / "weights.bin", bytes(weights))
    (folder / "tokenizer" / "merges.txt").unlink()
    _write(folder / "README.md", b"# bert\nFine-tuned on the support tickets of 2026.\n")


def make_scratch(sb: Sandbox) -> None:
    _write(sb.home / "scratch" / "weights.bin", _bytes(4, 512 * 1024))


def make_moves(sb: Sandbox) -> None:
    _write(sb.home / "notes.txt", b"notes\n")
    _write(sb.home / "a.bin", b"a\n")


def copy_bentoml_home(sb: Sandbox) -> None:
    shutil.copytree(BENTOML_HOME, sb.home / "bentoml")


def damage_ref(sb: Sandbox) -> None:
    """Cut the ref of iris_clf:v3 in half, as a crash of another tool would."""
    ref = StoreLayout(sb.store).refs / "iris_clf" / "v3"
    data = ref.read_bytes()
    ref.write_bytes(data[: len(data) // 2])


def damage_pack(sb: Sandbox) -> None:
    """Flip one byte in the middle of the largest pack (bit rot in a chunk of weights)."""
    packs = sorted((sb.store / "objects").rglob("*.pack"), key=lambda p: (-p.stat().st_size, p))
    data = bytearray(packs[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    packs[0].write_bytes(bytes(data))


# -- the examples, in the order they run ------------------------------------------------
V1 = SHOWN_VERSIONS[0]
EXAMPLES: list[Example] = [
    Example(
        "intro",
        [
            "mv save ./iris_clf iris_clf --label owner=nlp_team --metadata acc=0.93",
            "mv list",
        ],
        before=[make_iris],
    ),
    Example(
        "passthrough",
        [
            "mv notes.txt old-notes.txt          # the system mv",
            "mv -v a.bin b.bin                   # the system mv (GNU options pass through)",
            "mv list                             # modelvault",
        ],
        before=[make_moves],
    ),
    Example("error", [("mv get iris_clf:nope", 1)]),
    Example(
        "damaged-ref",
        ["mv list"],
        before=["mv save ./iris_clf iris_clf:v2", "mv save ./iris_clf iris_clf:v3", damage_ref],
        after=["mv delete iris_clf:v3 iris_clf:v2 -y"],
    ),
    Example("list", ["mv list iris_clf -o json"]),
    Example("get", ["mv get iris_clf"]),
    Example("delete", [f"mv delete iris_clf:{V1} -y"]),
    Example(
        "save",
        ["mv save ./out/bert bert:v3 --label stage=dev --metadata acc=0.91"],
        before=[make_bert_v2, "mv save ./out/bert bert:v2 --label stage=dev", make_bert_v3],
    ),
    Example("du", ["mv du", "mv du -o json"]),
    Example("diff", ["mv diff bert:v2 bert:v3", "mv diff bert:v2 bert:v3 -o json"]),
    Example("checkout", ["mv checkout bert:v3 ./bert-v3"]),
    Example(
        "export",
        [
            f"mv export bert:v3 file://{SHOWN_HOME}/team-models/archives/",
            "mv export bert:v3 --base bert:v2",
            "mv export bert:v3 ./for-bentoml/ --format bentoml",
        ],
    ),
    Example(
        "import",
        [
            "mv import ./bert-v3.bentomodel",
            "mv import --bentoml-store",
            "mv import --bentoml-store",
        ],
        before=[copy_bentoml_home],
        after=[
            "mv delete bento_onnx bento_pick bento_plain bento_sk bento_torch -y",
            f"mv remote add origin file://{SHOWN_HOME}/team-models/store",
        ],
    ),
    Example(
        "push-pull",
        [
            "mv push bert:v3",
            # pull has something to fetch: bert:v3 leaves the store after the push
            Hidden("mv delete bert:v3 -y"),
            Hidden("mv gc"),
            f"mv pull bert file://{SHOWN_HOME}/team-models/store",
            ("mv pull bert:v9", 1),
        ],
    ),
    Example(
        "alias",
        [
            "mv alias set bert@prod bert:v3",
            "mv alias list",
            ("mv delete bert:v3 -y", 1),
            "mv alias remove bert@prod",
        ],
    ),
    Example(
        "remote",
        [
            f"mv remote add backup file://{SHOWN_HOME}/backup --option auto_mkdir=true",
            "mv remote list",
            "mv remote remove backup",
        ],
    ),
    Example("status", ["mv status origin", "mv status origin -o json"]),
    Example(
        "delete-remote",
        ["mv delete bert:v2 --remote origin -y"],
        before=["mv push bert:v2"],
    ),
    Example("remote-unlock", ["mv remote unlock origin"]),
    Example(
        "gc",
        ["mv gc", "mv gc --remote origin"],
        # a gc first: what `mv gc` frees is then the packs of scratch:v1 alone (what the
        # earlier deletes leave depends on how saves spread objects over packs)
        before=["mv gc", make_scratch, "mv save ./scratch scratch:v1", "mv delete scratch -y"],
    ),
    # last: it damages the store
    Example(
        "verify",
        ["mv verify", "mv verify --remote origin", Hidden(damage_pack), ("mv verify", 1)],
    ),
]


def _hidden(sb: Sandbox, step: str | Action) -> None:
    if isinstance(step, str):
        sb.run(step)
    else:
        step(sb)


def render(example: Example, sb: Sandbox) -> str:
    """Run one example; its block's body as the docs show it."""
    for step in example.before:
        _hidden(sb, step)
    out: list[str] = []
    for command in example.commands:
        if isinstance(command, Hidden):
            _hidden(sb, command.step)
            continue
        line, status = (command, 0) if isinstance(command, str) else command
        out.append(f"$ {line}\n")
        text = sb.run(line, status)
        out.append(text if text.endswith("\n") or not text else text + "\n")
    for step in example.after:
        _hidden(sb, step)
    return "".join(out)


def generate(mv: str) -> dict[str, str]:
    """Every example's block body, from a fresh sandbox."""
    with tempfile.TemporaryDirectory(prefix="mv-docs-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        sb = Sandbox(home=home, mv=mv)
        sb.shown[str(home.resolve())] = SHOWN_HOME
        if str(home) != str(home.resolve()):
            sb.shown[str(home)] = SHOWN_HOME
        return {example.name: render(example, sb) for example in EXAMPLES}


def splice(doc: str, bodies: dict[str, str]) -> str:
    """``doc`` with the body of each marked block replaced; every example must have one."""
    found = [m.group("name") for m in _BLOCK.finditer(doc)]
    missing = sorted(set(bodies) - set(found))
    unknown = sorted(set(found) - set(bodies))
    twice = sorted({n for n in found if found.count(n) > 1})
    if missing or unknown or twice:
        raise SystemExit(
            f"docs/cli.md's example markers do not match the generator: missing {missing}, "
            f"unknown {unknown}, repeated {twice}"
        )

    def body(m: re.Match[str]) -> str:
        old, new = m.group("body"), bodies[m.group("name")]
        kept = old if masked(old) == masked(new) else new  # no churn in what is not compared
        return m.group("head") + kept + m.group("tail")

    return _BLOCK.sub(body, doc)


def masked(text: str) -> str:
    """``text`` with the numbers that differ between runs (``_VOLATILE``) masked."""
    return _VOLATILE.sub(r"\g<1>#\g<2>#", text)


def default_mv() -> str:
    candidate = Path(sys.executable).with_name("mv")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("mv", path=str(ROOT / ".venv" / "bin"))
    if found is None:
        raise SystemExit("the modelvault console script mv is not installed: pip install -e .")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument("--mv", default=None, help="the mv script to run")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    doc = args.doc.read_text(encoding="utf-8")
    made = splice(doc, generate(args.mv or default_mv()))
    if masked(made) == masked(doc):
        return 0
    if args.check:
        diff = difflib.unified_diff(
            doc.splitlines(keepends=True),
            made.splitlines(keepends=True),
            f"{args.doc} (as written)",
            f"{args.doc} (as the commands print now)",
        )
        sys.stdout.write("".join(diff))
        sys.stdout.write("\nrun `make docs-examples` to regenerate docs/cli.md's examples\n")
        return 1
    args.doc.write_text(made, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
