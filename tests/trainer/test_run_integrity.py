"""What a run reads back is checked, and what it writes is sound: checkpoints verified against
their checksums, never written with NaN or infinite values, logs and data checked on resume, a
run stopped before its first step started again in place, huge images and huge allocations
refused in one line."""

from __future__ import annotations

import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from reference_trainer import checkpoint as ckpt
from reference_trainer.cli import app
from reference_trainer.data.base import MAX_IMAGE_PIXELS_ENV, CorruptImageError
from reference_trainer.data.datasets import read_rgb_image

from .conftest import assert_same_state, records, tiny_run, write_image_folder


def one_line_error(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert "Traceback" not in output, output
    assert lines and lines[-1].startswith("error:"), output
    return lines[-1]


def invoke_ok(runner: CliRunner, args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of 6 steps stopped at step 3 (a checkpoint, and logs up to it)."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    invoke_ok(CliRunner(), [*tiny_run(run), "--steps", "6", "--log-every", "1", "--stop-at", "3"])
    return run


def copy_run(source: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(source, run)
    return run


def record_data(path: Path, name: str) -> tuple[int, int]:
    """Where a zip record's bytes start in the file, and how many there are."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    with path.open("rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def flip_bit(path: Path, offset: int, bit: int = 3) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def largest_tensor_record(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        tensors = [i for i in archive.infolist() if "/data/" in i.filename]
    return max(tensors, key=lambda i: i.file_size).filename


READERS = {
    "run --resume": lambda run: ["run", "--resume", str(run)],
    "eval knn": lambda run: ["eval", "knn", str(run), "--workers", "0", "--k", "5"],
    "export": lambda run: ["export", str(run)],
}


@pytest.mark.parametrize("record", ["tensor", "pickle"])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_flipped_bit_is_reported_not_resumed(
    runner: CliRunner, tmp_path: Path, stopped_run: Path, record: str, reader: str
) -> None:
    run = copy_run(stopped_run, tmp_path)
    path = run / "checkpoint.pt"
    name = largest_tensor_record(path) if record == "tensor" else "archive/data.pkl"
    start, size = record_data(path, name)
    flip_bit(path, start + size // 2)
    flipped = path.read_bytes()
    logs = (run / "metrics.jsonl").read_bytes()
    result = runner.invoke(app, READERS[reader](run))
    assert result.exit_code == 1, result.output
    line = one_line_error(result.output)
    assert f"{path} is corrupt: its record {name} does not match the checksum" in line, line
    assert path.read_bytes() == flipped and (run / "metrics.jsonl").read_bytes() == logs
    assert not (run / "backbone.safetensors").exists() and not (run / "eval_knn.json").exists()


@pytest.mark.parametrize("damage", ["cut", "garbage", "empty"])
def test_a_cut_or_foreign_checkpoint_is_one_line(
    runner: CliRunner, tmp_path: Path, stopped_run: Path, damage: str
) -> None:
    run = copy_run(stopped_run, tmp_path)
    path = run / "checkpoint.pt"
    data = path.read_bytes()
    path.write_bytes(
        {"cut": data[: len(data) // 2], "garbage": b"\x89PNG" + b"x" * 999, "empty": b""}[damage]
    )
    result = runner.invoke(app, ["run", "--resume", str(run)])
    assert result.exit_code == 1, result.output
    assert f"{path} is not a syn2co-train checkpoint" in one_line_error(result.output)


def test_verify_accepts_what_save_atomic_writes(tmp_path: Path) -> None:
    """Every record is stored with its CRC-32 and read back against it."""
    path = tmp_path / "c.pt"
    ckpt.save_atomic({"w": torch.arange(1000.0), "step": 1}, path)
    ckpt.verify(path)
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            assert zlib.crc32(archive.read(info)) == info.CRC and info.compress_type == 0


# --------------------------------------------------------------------------------------------
# The metrics log and the data on resume
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["not utf-8", "a folder"])
def test_an_unreadable_metrics_log_stops_the_resume_in_one_line(
    runner: CliRunner, tmp_path: Path, stopped_run: Path, damage: str
) -> None:
    run = copy_run(stopped_run, tmp_path)
    log = run / "metrics.jsonl"
    if damage == "a folder":
        log.unlink()
        log.mkdir()
    else:
        log.write_bytes(log.read_bytes()[:-20] + b"\xff\xfe\x00garbage\n")
    checkpoint = (run / "checkpoint.pt").read_bytes()
    result = runner.invoke(app, ["run", "--resume", str(run)])
    assert result.exit_code == 1, result.output
    line = one_line_error(result.output)
    assert str(log) in line and "move it aside" in line
    assert (run / "checkpoint.pt").read_bytes() == checkpoint  # nothing was written


def test_a_torn_last_line_is_dropped_with_a_word(
    runner: CliRunner, tmp_path: Path, stopped_run: Path
) -> None:
    run = copy_run(stopped_run, tmp_path)
    log = run / "metrics.jsonl"
    log.write_bytes(log.read_bytes() + b'{"step": 4, "loss": 1.2')  # a write cut short
    output = invoke_ok(runner, ["run", "--resume", str(run)])
    assert "dropped 1 unreadable line(s) (line 4" in " ".join(output.split())
    assert [r["step"] for r in records(run)] == [1, 2, 3, 4, 5, 6]


def test_resuming_with_other_data_says_the_data_changed(runner: CliRunner, tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "train", classes=2, per_class=24)  # 48 images
    run = tmp_path / "run"
    args = [*tiny_run(run), "--dataset", "imagefolder", "--data", str(data), "--steps", "6"]
    invoke_ok(runner, [*args, "--stop-at", "2"])
    write_image_folder(tmp_path / "more", classes=1, per_class=5)
    shutil.move(tmp_path / "more" / "class_0", data / "class_9")  # 53 images now
    result = runner.invoke(app, ["run", "--resume", str(run)])
    assert result.exit_code == 1, result.output
    line = one_line_error(result.output)
    assert f"--data {data}: the training images changed" in line
    assert "(53 images now, 48 then)" in line and "start a new run" in line


# --------------------------------------------------------------------------------------------
# Non-finite values are never written
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["moby", "mocov3"])
def test_a_diverging_run_never_writes_non_finite_values(
    runner: CliRunner, tmp_path: Path, method: str
) -> None:
    """``--lr 1000``: the BatchNorm running variances of the heads overflow before the loss
    does; the last checkpoint written has every value finite, and the error names it."""
    run = tmp_path / "run"
    args = [*tiny_run(run), "--method", method, "--lr", "1000", "--warmup-steps", "0"]
    result = runner.invoke(app, [*args, "--steps", "40", "--checkpoint-every", "1"])
    assert result.exit_code == 1, result.output
    line = one_line_error(result.output)
    assert "NaN or infinite" in line
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert f"the last good checkpoint is {run / 'checkpoint.pt'} (step {state['step']})" in line
    for name, tensor in ckpt.named_tensors(state):
        assert not tensor.is_floating_point() or torch.isfinite(tensor).all(), name
    invoke_ok(runner, ["export", str(run)])  # and it exports


def test_nonfinite_finds_the_first_bad_tensor() -> None:
    good = {"a": torch.ones(3), "b": torch.zeros(2, dtype=torch.float16), "n": torch.arange(3)}
    assert ckpt.nonfinite(ckpt.named_tensors(good)) is None
    bad = {**good, "c": {"d": [torch.ones(2), torch.tensor([1.0, float("inf")])]}}
    assert ckpt.nonfinite(ckpt.named_tensors(bad)) == "c.d.1"
    huge = {"e": torch.full((4,), 3e38)}  # finite, though its norm would overflow
    assert ckpt.nonfinite(ckpt.named_tensors(huge)) is None
    assert ckpt.nonfinite(ckpt.named_tensors({"f": torch.tensor([float("nan")])})) == "f"


def test_export_refuses_non_finite_weights(
    runner: CliRunner, tmp_path: Path, stopped_run: Path
) -> None:
    run = copy_run(stopped_run, tmp_path)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    name = next(k for k in state["online"] if k.startswith("encoder.backbone.") and "weight" in k)
    state["online"][name][0] = float("inf")
    torch.save(state, run / "checkpoint.pt")
    for args in (["export", str(run)], ["eval", "knn", str(run), "--workers", "0"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        line = one_line_error(result.output)
        assert "NaN or infinite" in line and name.removeprefix("encoder.backbone.") in line
    assert not (run / "backbone.safetensors").exists()


# --------------------------------------------------------------------------------------------
# A run stopped before its first step starts again in place
# --------------------------------------------------------------------------------------------


def stopped_at_start(source: Path, tmp_path: Path) -> Path:
    """What a run stopped before its first step leaves: config.yaml (and the lock file)."""
    run = copy_run(source, tmp_path)
    for name in ("checkpoint.pt", "metrics.jsonl"):
        (run / name).unlink()
    shutil.rmtree(run / "tensorboard", ignore_errors=True)
    return run


@pytest.mark.parametrize("how", ["same command", "--resume"])
def test_a_run_stopped_before_its_first_step_starts_again_in_place(
    runner: CliRunner, tmp_path: Path, stopped_run: Path, how: str
) -> None:
    reference = tmp_path / "reference"
    args = [*tiny_run(reference), "--steps", "6", "--log-every", "1"]
    invoke_ok(runner, args)
    run = stopped_at_start(stopped_run, tmp_path)
    again = args.copy()
    again[again.index(str(reference))] = str(run)
    output = invoke_ok(runner, again if how == "same command" else ["run", "--resume", str(run)])
    assert "stopped before its first step" in output and "starting it again in place" in output
    assert_same_state(reference, run)
    assert records(run) == records(reference)


def test_eval_without_a_checkpoint_names_the_run(
    runner: CliRunner, tmp_path: Path, stopped_run: Path
) -> None:
    run = stopped_at_start(stopped_run, tmp_path)
    result = runner.invoke(app, ["eval", "knn", str(run)])
    assert result.exit_code == 1
    line = one_line_error(result.output)
    assert line.startswith(f"error: RUN: no checkpoint at {run / 'checkpoint.pt'}")
    assert "--resume" not in line


def test_export_to_an_existing_folder_writes_inside_it(
    runner: CliRunner, tmp_path: Path, stopped_run: Path
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    invoke_ok(runner, ["export", str(stopped_run), "--out", str(folder)])
    assert sorted(p.name for p in folder.iterdir()) == ["backbone.json", "backbone.safetensors"]
    assert not (tmp_path / "exports.safetensors").exists()


# --------------------------------------------------------------------------------------------
# Images, files and memory
# --------------------------------------------------------------------------------------------


def png_header_only(path: Path, side: int) -> None:
    """A PNG that declares ``side x side`` pixels in a few bytes (its data never comes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (3 * side + 1))  # one row
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.mark.filterwarnings("error")
def test_an_image_beyond_the_pixel_limit_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = tmp_path / "bomb.png"
    png_header_only(bomb, 13_000)
    assert bomb.stat().st_size < 100_000
    refused = f"169000000 pixels, more than the limit of 67108864; set {MAX_IMAGE_PIXELS_ENV}"
    with pytest.raises(CorruptImageError, match=refused):
        read_rgb_image(str(bomb))
    medium = tmp_path / "medium.png"
    png_header_only(medium, 9000)  # between the limit and PIL's error at twice it
    with pytest.raises(CorruptImageError, match="9000x9000 is 81000000 pixels, more than"):
        read_rgb_image(str(medium))
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30), (1, 2, 3)).save(small)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "1000")
    with pytest.raises(
        CorruptImageError, match="40x30 is 1200 pixels, more than the limit of 1000"
    ):
        read_rgb_image(str(small))
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "1200")
    assert read_rgb_image(str(small)).size == (40, 30)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "500")  # PIL's own guard (twice the limit) too
    with pytest.raises(CorruptImageError, match="1200 pixels, more than the limit of 500"):
        read_rgb_image(str(small))


def test_unreadable_files_are_counted_once_each(runner: CliRunner, tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "train", classes=2, per_class=8)
    (data / "class_0" / "000.png").write_bytes(b"not an image")
    run = tmp_path / "run"
    args = [*tiny_run(run), "--dataset", "imagefolder", "--data", str(data), "--steps", "6"]
    output = invoke_ok(runner, [*args, "--batch-size", "8"])  # 3 epochs: read 3 times
    row = next(line for line in output.splitlines() if "unreadable images skipped" in line)
    assert row.split("│")[2].strip() == "1"


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 8000000000000 bytes. Error code 12"
        ),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        MemoryError(),
    ],
    ids=["cpu", "cuda", "python"],
)
def test_an_allocation_failure_is_one_line_and_leaves_nothing(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr("reference_trainer.engine.build_components", fail)
    out = tmp_path / "run"
    result = runner.invoke(app, [*tiny_run(out), "--steps", "2"])
    assert result.exit_code == 1, result.output
    line = one_line_error(result.output)
    assert line.startswith("error: out of memory: an allocation") and "--batch-size" in line
    assert not out.exists()


def test_save_refuses_a_write_that_does_not_fit_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoint.pt"
    ckpt.save_atomic({"step": 1}, path)
    monkeypatch.setattr("reference_trainer.atomic.free_bytes", lambda p: 1000)
    with pytest.raises(
        OSError,
        match=r"cannot write .*checkpoint.pt: No space left on device; "
        r"it needs about 2\.0 KB; 1\.0 KB free",
    ):
        ckpt.save_atomic({"step": 2}, path, size=2000)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_networks_larger_than_the_memory_are_refused_before_allocation(
    runner: CliRunner, tmp_path: Path
) -> None:
    """Counted on the meta device: 1024 blocks of width 65536 are some 10^13 parameters."""
    out = tmp_path / "run"
    args = [*tiny_run(out), "--embed-dim", "65536", "--depth", "1024", "--num-heads", "1"]
    result = runner.invoke(app, [*args, "--steps", "1"])
    assert result.exit_code == 1, result.output
    line = one_line_error(result.output)
    assert line.startswith("error: the networks alone take about") and "--embed-dim" in line
    assert not out.exists()
