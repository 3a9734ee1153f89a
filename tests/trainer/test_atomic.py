"""Crash-safe writes: a failed write leaves the previous file whole and no temporary behind."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
import torch

from reference_trainer.atomic import write_atomic
from reference_trainer.checkpoint import save_atomic


def test_write_atomic_replaces_the_file_and_creates_missing_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "file.bin"
    write_atomic(path, lambda f: f.write(b"first"))
    write_atomic(path, lambda f: f.write(b"second"))
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.bin"]


def test_a_write_that_fails_half_way_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_atomic({"step": 1}, path)

    def half_then_fail(f: BinaryIO) -> None:
        f.write(b"partial bytes of a new checkpoint")
        raise KeyboardInterrupt  # a killed run: BaseException, not only Exception

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half_then_fail)
    assert torch.load(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_save_atomic_round_trips_tensors(tmp_path: Path) -> None:
    state = {"w": torch.arange(6.0).reshape(2, 3), "step": 7}
    save_atomic(state, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt")
    assert loaded["step"] == 7 and torch.equal(loaded["w"], state["w"])


@pytest.fixture
def restore_umask() -> Iterator[None]:
    """Restore the process umask that a test changes."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize(
    ("mask", "mode"),
    [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)],
    ids=["umask-022", "umask-002", "umask-077"],
)
@pytest.mark.usefixtures("restore_umask")
def test_a_new_file_gets_the_permissions_of_a_plain_open(
    tmp_path: Path, mask: int, mode: int
) -> None:
    os.umask(mask)
    with (tmp_path / "plain").open("wb"):
        pass
    write_atomic(tmp_path / "atomic", lambda f: f.write(b"x"))
    save_atomic({"step": 1}, tmp_path / "checkpoint.pt")
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "atomic").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "checkpoint.pt").stat().st_mode) == mode


def test_a_replaced_file_keeps_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")
    path.chmod(0o640)
    write_atomic(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
