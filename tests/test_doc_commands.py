"""Every command line of the README and the documentation works as written.

The fenced ``bash``, ``sh``, ``shell`` and ``console`` blocks (in ``console``, the lines that
start with ``$``) of ``README.md`` and ``docs/**/*.md`` are read in page order; lines ending in
``\\`` are joined, comments dropped, and ``a && b`` split into its commands. Each page's commands
then run one after the other, in one temporary directory per page (so a page's later lines see
what its earlier ones made: the README's trainer block runs as one sequence), with this
checkout's code. A command fails the test when it exits non-zero.

What is changed before a command runs, so that it fits a CPU and a few seconds, is the table
``SUBSTITUTIONS`` below, applied in order; what is not run at all, and why, is
``NOT_RUN_COMMANDS``, ``NOT_RUN_PAGES`` and the blocks marked on their page with
``<!-- not-run: REASON -->`` on the line above the fence (a reason is required). Nothing else is
changed. ``FAKE_FILES`` lists what the test puts in each page's directory first.
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = shlex.quote(sys.executable)

# The tiny model and run that replace a pretraining's sizes (later flags win over earlier ones).
TINY_RUN = (
    "--steps 2 --batch-size 8 --img-size 32 --workers 0 --builtin-size 64 "
    "--depth 1 --embed-dim 32 --num-heads 2 --proj-hidden 64 --proj-dim 32"
)

#: (pattern, replacement, why), applied in this order to every command that runs. ``{python}``
#: is this interpreter, ``{root}`` the checkout.
SUBSTITUTIONS: list[tuple[str, str, str]] = [
    (
        r"^syn2co-train\b",
        "{python} -m reference_trainer.cli",
        "the same entry point, from this checkout (not an installed script)",
    ),
    (
        r"^torchrun --nproc-per-node \d+ -m ",
        "{python} -m torch.distributed.run --standalone --nproc-per-node 2 -m ",
        "2 processes on the CPU (gloo) instead of 8 GPUs, meeting on a free port (--standalone) "
        "so that tests running at once never share one",
    ),
    (
        r"(?<![\w.])/data/",
        "data/",
        "a fake ImageFolder of 2 classes x 8 PNG images (FAKE_FILES) for every dataset path",
    ),
    (
        r"(?<![\w.])/shared/runs/x\b",
        "shared/runs/x",
        "a copy of the page's runs/synco-v2-swin-t, made by the test before the line runs",
    ),
    (
        r"(-m reference_trainer\.cli run (?!.*--resume).*)$",
        rf"\1 {TINY_RUN}",
        "a pretraining: 2 steps of batch 8 at 32 px, a 1-block backbone of width 32, heads of "
        "width 64",
    ),
    (
        r"(-m reference_trainer\.cli run .*--resume.*)$",
        r"\1 --workers 0",
        "a resumed run: no DataLoader worker processes (the only option changed)",
    ),
    (
        r"(-m reference_trainer\.cli demo.*)$",
        r"\1 --steps 2 --workers 0",
        "the demo: 2 steps instead of 300",
    ),
    (
        r"(-m reference_trainer\.cli eval knn .*--protocol synco-v2.*)$",
        r"\1 --batch-size 2",
        "SynCo v2's sharded kNN: batches of 2 (its batch of 64 is more than a shard of the "
        "fake ImageFolder holds)",
    ),
    (
        r"^python (examples/make_shapes_folder\.py .*)$",
        r"{python} {root}/\1 --train 40 --val 20",
        "the examples' image folder: 40 + 20 images instead of 2,000 + 500",
    ),
    (
        r"^python (examples/\S+\.py .*)$",
        r"{python} {root}/\1 --steps 2 --batch-size 8 --workers 0",
        "an example script: 2 steps of batch 8, no DataLoader workers",
    ),
]

#: Commands that are not run (regex on the command as written), and why.
NOT_RUN_COMMANDS: list[tuple[str, str]] = [
    (r"^pip install\b", "installs: .ci/run installs the checkout and the built wheel"),
    (r"^python3 -m venv\b", "makes a virtual environment: .ci/run does"),
    (r"^\. \S*/bin/activate$", "activates that environment"),
    (r"^python -m build\b", "builds the wheel: .ci/run builds it and runs it installed"),
    (r"^git clone\b", "downloads the repository"),
    (r"^cd syn2co$", "enters the clone"),
    (r"^bash \.ci/run\b", "the continuous integration itself, which runs this test"),
    (r"^bash scripts/check\b", "the test suite itself"),
    (r"^mkdocs (serve|build)\b", "the site: tests/test_docs.py builds it"),
]

#: Commands that run once per pytest process, on the first page that has them (they read and
#: write nothing of the page's own), and why.
ONCE: dict[str, str] = {
    "syn2co-train demo": "the demo (a data set of 4,000 images and two kNN evaluations), the "
    "same on the README, the home page and the trainer guide",
}
_ran_once: set[str] = set()

#: Pages whose commands are not run, and why.
NOT_RUN_PAGES: dict[str, str] = {
    "docs/benchmarks.md": "the benchmarks' own commands: minutes to hours each, some on a GPU; "
    "every result on the page gives the command that measured it",
    "docs/trainer/reproducing.md": "the papers' full runs (ImageNet-1K and ImageNet-100 "
    "recipes on 4 to 32 GPUs, a synthetic ImageNet-100 from a diffusion model)",
}

#: Example scripts and the library each needs (an extra): skipped where it is not installed.
NEEDS = {"lightly_moco.py": "lightly", "pml_ntxent.py": "pytorch_metric_learning"}

#: What the test puts in each page's directory before its first command.
FAKE_FILES = (
    "data/imagenet/train, data/imagenet/val, data/imagenet-sd, data/cifar10/train, "
    "data/cifar10/test, data/cifar10-sd: ImageFolders of 2 classes (8 PNG images of 40 x 40 px "
    "per class; 4 in val and test)"
)

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*?)[ \t]*$")
_NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*(?P<why>\S.*?)\s*-->\s*$")
_SHELL = {"bash", "sh", "shell", "console"}


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str  # as written (continuations joined, comment dropped)
    skip: str | None  # why it is not run


def _language(info: str) -> str:
    info = info.strip()
    if info.startswith("{"):
        classes = re.findall(r"\.([\w-]+)", info)
        return classes[0] if classes else ""
    return info.split()[0] if info else ""


def _strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` after a space, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def extract_commands(page: Path) -> list[Command]:
    """The shell command lines of a Markdown page, in order, with why each is not run."""
    rel = page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else page.name
    lines = page.read_text(encoding="utf-8").splitlines()
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, language = match["fence"], _language(match["info"])
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if language in _SHELL:
            previous = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            marked = _NOT_RUN.match(previous)
            block_skip = marked["why"] if marked else NOT_RUN_PAGES.get(rel)
            body = [(k + 1, lines[k].strip()) for k in range(i + 1, j)]
            if language == "console":
                body = [(n, t[2:]) for n, t in body if t.startswith("$ ")]
            pending, start = "", 0
            for number, text in body:
                text = _strip_comment(text)
                if not pending:
                    start = number
                if text.endswith("\\"):
                    pending += text[:-1].strip() + " "
                    continue
                full = (pending + text).strip()
                pending = ""
                for part in (p.strip() for p in full.split(" && ")):
                    if not part:
                        continue
                    skip = block_skip or next(
                        (why for pattern, why in NOT_RUN_COMMANDS if re.search(pattern, part)),
                        None,
                    )
                    commands.append(Command(rel, start, part, skip))
        i = j + 1
    return commands


def substitute(command: str) -> str:
    """The command as it runs here (the SUBSTITUTIONS table, in order)."""
    root = shlex.quote(str(ROOT))
    for pattern, replacement, _ in SUBSTITUTIONS:
        command = re.sub(pattern, replacement.replace("{python}", PY), command)
    return command.replace("{root}", root)


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _pages_with_commands() -> list[Path]:
    return [p for p in _pages() if any(c.skip is None for c in extract_commands(p))]


def _image_folder(root: Path, per_class: int, seed: int) -> None:
    from PIL import Image

    g = random.Random(seed)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour = tuple(g.randrange(256) for _ in range(3))
            Image.new("RGB", (40, 40), colour).save(root / name / f"{i}.png")


def _fake_files(workdir: Path) -> None:
    data = workdir / "data"
    folders = {"imagenet/train": 8, "imagenet/val": 4, "imagenet-sd": 8}
    folders |= {"cifar10/train": 8, "cifar10/test": 4, "cifar10-sd": 8}
    for seed, (folder, per_class) in enumerate(folders.items()):
        _image_folder(data / folder, per_class, seed)


def test_extraction_and_substitution(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\nsyn2co-train run --data /data/x \\\n    --out runs/a   # a run\n"
        "# a comment\npip install -e . && syn2co-train demo\n```\n\n"
        "<!-- not-run: needs a cluster -->\n```bash\nsrun x\n```\n\n"
        "```console\n$ syn2co-train recipes\noutput line\n```\n",
        encoding="utf-8",
    )
    commands = extract_commands(page)
    assert [(c.line, c.text, c.skip) for c in commands] == [
        (2, "syn2co-train run --data /data/x --out runs/a", None),
        (5, "pip install -e .", NOT_RUN_COMMANDS[0][1]),
        (5, "syn2co-train demo", None),
        (10, "srun x", "needs a cluster"),
        (14, "syn2co-train recipes", None),
    ]
    assert substitute(commands[0].text) == (
        f"{PY} -m reference_trainer.cli run --data data/x --out runs/a {TINY_RUN}"
    )
    assert substitute("syn2co-train run --resume runs/a").endswith("--resume runs/a --workers 0")
    assert substitute(
        "torchrun --nproc-per-node 8 -m reference_trainer.cli run --out b"
    ).startswith(
        f"{PY} -m torch.distributed.run --standalone --nproc-per-node 2 -m reference_trainer.cli "
        "run --out b"
    )


def test_the_readme_and_guides_are_covered() -> None:
    covered = {p.relative_to(ROOT).as_posix() for p in _pages_with_commands()}
    assert {"README.md", "docs/index.md", "docs/examples.md", "docs/trainer/index.md"} <= covered
    readme = [c for c in extract_commands(ROOT / "README.md") if c.skip is None]
    assert any("torchrun" in c.text for c in readme)
    assert any("--resume" in c.text for c in readme)


@pytest.mark.slow
@pytest.mark.parametrize(
    "page", _pages_with_commands(), ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_page_commands_run(page: Path, tmp_path: Path) -> None:
    _fake_files(tmp_path)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "CUDA_VISIBLE_DEVICES": "",
        "COLUMNS": "200",
        "OMP_NUM_THREADS": "1",
    }
    for command in extract_commands(page):
        if command.skip is not None or command.text in _ran_once:
            continue
        if command.text in ONCE:
            _ran_once.add(command.text)
        script = re.search(r"examples/(\w+\.py)", command.text)
        needed = NEEDS.get(script[1]) if script else None
        if needed and importlib.util.find_spec(needed) is None:
            continue  # its extra is not installed here
        if "/shared/runs/x" in command.text and not (tmp_path / "shared/runs/x").exists():
            shutil.copytree(tmp_path / "runs" / "synco-v2-swin-t", tmp_path / "shared/runs/x")
        run = substitute(command.text)
        result = subprocess.run(
            ["bash", "-c", run],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, (
            f"{command.page}:{command.line}: `{command.text}` failed (exit {result.returncode})\n"
            f"ran: {run}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
