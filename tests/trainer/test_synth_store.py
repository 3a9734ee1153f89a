"""The output directory of ``syn2co-train synth``: one job at a time, nothing deleted or
overwritten that synth did not write, no symbolic link followed, and a failed write that loses
nothing. Real files, real links, real processes."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from reference_trainer.cli import app
from reference_trainer.synth import dhash

from .conftest import child_env
from .tiny_diffusers import save_ddpm


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ddpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "ddpm"
    torch.manual_seed(0)
    save_ddpm(path)
    return path


def synth_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--out", str(out), "--steps", "2", "--device", "cpu", *extra]


def invoke(runner: CliRunner, args: list[str], code: int = 0) -> str:
    result = runner.invoke(app, ["synth", *args])
    assert result.exit_code == code, f"exit {result.exit_code}:\n{result.output}"
    return result.output


def error_line(output: str) -> str:
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


def listed(out: Path) -> list[str]:
    return [json.loads(line)["file"] for line in (out / "manifest.jsonl").read_text().splitlines()]


def images_on_disk(out: Path) -> list[str]:
    """Every file in the real class folders (links not followed), hidden ones included."""
    return sorted(
        f"{folder.name}/{file.name}"
        for folder in out.iterdir()
        if folder.is_dir() and not folder.is_symlink()
        for file in folder.iterdir()
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file and link under ``folder`` (links not followed): its bytes or its target."""
    found: dict[str, bytes] = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in [*files, *(d for d in dirs if os.path.islink(os.path.join(root, d)))]:
            path = Path(root, name)
            key = str(path.relative_to(folder))
            found[key] = b"-> " + os.readlink(path).encode() if path.is_symlink() else b""
            if not path.is_symlink():
                found[key] = path.read_bytes()
    return found


def expected(classes: str, per_class: int) -> list[str]:
    return [f"{c}/{i:06d}.png" for c in classes.split(",") for i in range(per_class)]


# --------------------------------------------------------------------------------------------
# Files synth did not write
# --------------------------------------------------------------------------------------------


def test_a_linked_folder_is_never_followed(runner: CliRunner, tmp_path: Path, ddpm: Path) -> None:
    out = tmp_path / "out"
    invoke(runner, synth_args(ddpm, out, "--classes", "a", "--images-per-class", "2"))
    elsewhere = tmp_path / "photos"
    elsewhere.mkdir()
    for i in range(3):  # named like synth's images and temporaries, not listed
        Image.new("RGB", (16, 16), (60 * i, 0, 0)).save(elsewhere / f"{i:06d}.png")
    (elsewhere / ".000003.png.tmp").write_bytes(b"someone's file")
    before = snapshot(elsewhere)
    (out / "photos").symlink_to(elsewhere, target_is_directory=True)

    # a folder this run does not need: left alone, and said so
    output = invoke(runner, synth_args(ddpm, out, "--classes", "a", "--images-per-class", "3"))
    assert snapshot(elsewhere) == before and (out / "photos").is_symlink()
    assert "photos (a symbolic link)" in output
    assert listed(out) == expected("a", 3)

    # a folder this run would write into: refused in one line before anything is made
    args = synth_args(ddpm, out, "--classes", "a,photos", "--images-per-class", "3")
    line = error_line(invoke(runner, args, 1))
    assert f"--out {out}: photos is a symbolic link" in line
    assert snapshot(elsewhere) == before and listed(out) == expected("a", 3)

    # a class folder of the manifest replaced by a link to its copy: refused, copy untouched
    moved = tmp_path / "a-moved"
    (out / "a").rename(moved)
    (out / "a").symlink_to(moved, target_is_directory=True)
    (moved / ".000009.png.tmp").write_bytes(b"would be synth's temporary in a real folder")
    (moved / "000009.png").write_bytes(b"would be a stray image in a real folder")
    copy, manifest = snapshot(moved), (out / "manifest.jsonl").read_bytes()
    args = synth_args(ddpm, out, "--classes", "a", "--images-per-class", "4")
    line = error_line(invoke(runner, args, 1))
    assert f"--out {out}: a is a symbolic link, not a class folder" in line
    assert snapshot(moved) == copy and (out / "manifest.jsonl").read_bytes() == manifest


def test_a_linked_file_is_never_followed_nor_removed(
    runner: CliRunner, tmp_path: Path, ddpm: Path
) -> None:
    out = tmp_path / "out"
    invoke(runner, synth_args(ddpm, out, "--classes", "a", "--images-per-class", "2"))
    target = tmp_path / "outside.png"
    Image.new("RGB", (16, 16), "blue").save(target)
    data = target.read_bytes()
    args = synth_args(ddpm, out, "--classes", "a", "--images-per-class", "4")

    # named like an image of this run: refused, the link and its target kept
    (out / "a/000003.png").symlink_to(target)
    line = error_line(invoke(runner, args, 1))
    assert f"--out {out}: a/000003.png not listed in manifest.jsonl" in line
    assert (out / "a/000003.png").is_symlink() and target.read_bytes() == data
    assert listed(out) == expected("a", 2) and not (out / "a/000002.png").exists()

    # any other name, even synth's temporary one: left alone, and the run goes on
    (out / "a/000003.png").rename(out / "a/view.png")
    (out / "a/.000005.png.tmp").symlink_to(target)
    output = invoke(runner, args)
    assert "left alone 1 file(s)" in output and "a/view.png" in output
    assert (out / "a/view.png").is_symlink() and (out / "a/.000005.png.tmp").is_symlink()
    assert target.read_bytes() == data
    assert listed(out) == expected("a", 4)

    # a listed image replaced by a link: refused, nothing written through it
    (out / "a/000000.png").unlink()
    (out / "a/000000.png").symlink_to(target)
    line = error_line(invoke(runner, args, 1))
    assert f"--out {out}: a/000000.png is a symbolic link" in line
    assert (out / "a/000000.png").is_symlink() and target.read_bytes() == data


def test_an_unlisted_image_stops_the_run_and_stays(
    runner: CliRunner, tmp_path: Path, ddpm: Path
) -> None:
    out = tmp_path / "out"
    invoke(runner, synth_args(ddpm, out, "--classes", "a,b", "--images-per-class", "2"))
    stray = out / "b/000003.png"  # e.g. a copy from another set, or one put back by hand
    red = Image.new("RGB", (16, 16), "red")
    red.save(stray)
    data, manifest = stray.read_bytes(), (out / "manifest.jsonl").read_bytes()
    (out / "b/notes.txt").write_text("mine")
    args = synth_args(ddpm, out, "--classes", "a,b", "--images-per-class", "4")

    line = error_line(invoke(runner, args, 1))
    assert line.startswith(f"error: --out {out}: b/000003.png not listed in manifest.jsonl")
    assert "move it out of --out (or delete it), then rerun" in line
    assert stray.read_bytes() == data and (out / "manifest.jsonl").read_bytes() == manifest
    assert images_on_disk(out) == sorted([*expected("a,b", 2), "b/000003.png", "b/notes.txt"])

    # moved away as the line says: the run completes; the other file stays, named in a note
    stray.rename(tmp_path / "kept.png")
    output = invoke(runner, args)
    assert "left alone 1 file(s)" in output and "b/notes.txt" in output
    assert (out / "b/notes.txt").read_text() == "mine"
    files = listed(out)
    assert sorted(files) == expected("a,b", 4) and len(set(files)) == len(files)
    with Image.open(out / "b/000003.png") as made:
        assert not np.array_equal(np.asarray(made.convert("RGB")), np.asarray(red))


def test_a_job_that_writes_nothing_leaves_nothing(
    runner: CliRunner, tmp_path: Path, ddpm: Path
) -> None:
    missing = ["--model", str(tmp_path / "no-model"), "--classes", "a", "--images-per-class", "1"]
    new = tmp_path / "new" / "out"
    line = error_line(invoke(runner, [*missing, "--out", str(new)], 1))
    assert "no such directory" in line
    assert not (tmp_path / "new").exists()  # nor the parent it created
    empty = tmp_path / "empty"
    empty.mkdir()
    error_line(invoke(runner, [*missing, "--out", str(empty)], 1))
    assert list(empty.iterdir()) == []  # no lock file left in the user's folder
    # a folder that is not synth's gets nothing written into it, not even a lock file
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "photo.png").write_bytes(b"mine")
    args = synth_args(ddpm, foreign, "--classes", "a", "--images-per-class", "1")
    assert "not made by syn2co-train synth" in error_line(invoke(runner, args, 1))
    assert sorted(p.name for p in foreign.iterdir()) == ["photo.png"]


# --------------------------------------------------------------------------------------------
# Real processes
# --------------------------------------------------------------------------------------------


def synth_command(model: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "reference_trainer.cli", "synth", *synth_args(model, out, *extra)]


def quiet_env() -> dict[str, str]:
    return {**child_env(), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def test_two_jobs_on_one_new_directory(tmp_path: Path, ddpm: Path) -> None:
    out = tmp_path / "new" / "out"
    command = synth_command(ddpm, out, "--classes", "a,b", "--images-per-class", "6")
    command += ["--batch-size", "2"]
    first = subprocess.Popen(
        command, env=quiet_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    time.sleep(0.3)
    second = subprocess.Popen(
        command, env=quiet_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        errors = {p.pid: p.communicate(timeout=300)[1].decode() for p in (first, second)}
    finally:
        for p in (first, second):
            p.kill()
            p.wait()
    assert sorted([first.returncode, second.returncode]) == [0, 1], errors
    winner, loser = (first, second) if first.returncode == 0 else (second, first)
    message = errors[loser.pid]
    assert error_line(message) == (
        f"error: --out {out}: another syn2co-train synth (PID {winner.pid} on "
        f"{socket.gethostname()}) is writing to this directory; wait for it to end, or choose "
        "another --out"
    )
    assert "loading" not in message  # refused before loading its model
    files = listed(out)
    assert sorted(files) == expected("a,b", 6) and len(set(files)) == len(files) == 12
    assert images_on_disk(out) == expected("a,b", 6)


@pytest.mark.parametrize(("limit", "failing"), [(60, "a/000000.png"), (2000, "manifest.jsonl")])
def test_a_failed_write_is_one_line_and_loses_nothing(
    runner: CliRunner, tmp_path: Path, ddpm: Path, limit: int, failing: str
) -> None:
    """A file-size limit (as a full disk or a quota) hit at the first image (60 bytes, less
    than any PNG) or in the middle of a manifest line (2000 bytes: five or six lines)."""
    out = tmp_path / "out"
    args = ["--classes", "a,b", "--images-per-class", "4", "--batch-size", "4"]

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    process = subprocess.run(
        synth_command(ddpm, out, *args),
        env=quiet_env(),
        capture_output=True,
        preexec_fn=limited,
        timeout=300,
        check=False,
    )
    message = process.stderr.decode()
    assert process.returncode == 1, message
    assert error_line(message).startswith(f"error: cannot write {out / failing}: File too large")
    if failing.endswith(".png"):
        assert not out.exists()  # nothing made, nothing left
    else:
        raw = (out / "manifest.jsonl").read_bytes()
        assert raw.endswith(b"\n")  # cut back to its last whole line
        files = listed(out)
        assert 1 <= len(files) < 8 and images_on_disk(out) == sorted(files)  # no temporaries
        for line in (out / "manifest.jsonl").read_text().splitlines():
            entry = json.loads(line)
            with Image.open(out / entry["file"]) as image:
                assert f"{dhash(image):016x}" == entry["dhash"]  # complete images only
        assert f"the {len(files)} image(s) finished before it: rerun to continue" in message
    output = invoke(runner, synth_args(ddpm, out, *args))
    assert "dropped" not in output and "removed" not in output and "forgot" not in output
    files = listed(out)
    assert sorted(files) == expected("a,b", 4) and len(set(files)) == len(files)
    assert images_on_disk(out) == expected("a,b", 4)
