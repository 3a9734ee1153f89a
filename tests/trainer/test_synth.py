"""syn2co-train synth with real diffusers pipelines of random weights, saved and loaded back.

The three tiny pipelines (unconditional DDPM, class-conditional DiT, Stable-Diffusion-style
text-to-image) are written with ``save_pretrained`` and given to the CLI as ``--model PATH``,
the way users pass a downloaded checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from reference_trainer import synth
from reference_trainer.cli import app
from reference_trainer.data.datasets import build_dataset
from reference_trainer.synth import image_seed

from .conftest import write_image_folder
from .tiny_diffusers import save_ddpm, save_dit, save_text_to_image

FIELDS = {
    "file",
    "class",
    "index",
    "prompt",
    "class_id",
    "seed",
    "kind",
    "model",
    "pipeline",
    "scheduler",
    "steps",
    "guidance",
    "size",
    "dtype",
    "device",
    "dhash",
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny convolutions: threads only add contention on a small shared CI machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    paths = {"ddpm": root / "ddpm", "dit": root / "dit", "sd": root / "sd"}
    save_ddpm(paths["ddpm"])
    save_dit(paths["dit"])
    save_text_to_image(paths["sd"])
    return paths


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def invoke(runner: CliRunner, args: list[str], code: int = 0) -> str:
    result = runner.invoke(app, ["synth", *args])
    assert result.exit_code == code, (
        f"exit {result.exit_code}, expected {code}:\n{result.output}\n{result.exception!r}"
    )
    return result.output


def manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def pngs(out: Path) -> dict[str, int]:
    """Image files per class folder (hidden files excluded)."""
    return {
        d.name: len([f for f in d.iterdir() if f.suffix == ".png" and not f.name.startswith(".")])
        for d in sorted(out.iterdir())
        if d.is_dir()
    }


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def assert_regenerates(out: Path, entry: dict[str, Any], model: Path) -> None:
    pipeline, _, _ = synth.load_pipeline(str(model), device="cpu", dtype="fp32")
    image = synth.regenerate(json.dumps(entry), pipeline)
    assert image.size == tuple(entry["size"])
    np.testing.assert_array_equal(np.asarray(image), pixels(out / entry["file"]))


def error_line(output: str) -> str:
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


# --------------------------------------------------------------------------------------------
# The three kinds of pipelines
# --------------------------------------------------------------------------------------------


def test_unconditional_pipeline(runner: CliRunner, tmp_path: Path, models: dict[str, Path]) -> None:
    out = tmp_path / "synthetic"
    args = ["--model", str(models["ddpm"]), "--out", str(out), "--classes", "a,b"]
    output = invoke(runner, [*args, "--images-per-class", "3", "--steps", "2", "--batch-size", "2"])
    assert "synthetic images in" in output and "images/s" in output
    assert pngs(out) == {"a": 3, "b": 3}
    lines = manifest(out)
    assert len(lines) == 6 and all(set(line) == FIELDS for line in lines)
    first = lines[0]
    assert first["file"] == "a/000000.png" and first["class"] == "a" and first["index"] == 0
    assert first["kind"] == "unconditional" and first["pipeline"] == "DDPMPipeline"
    assert first["prompt"] is None and first["class_id"] is None and first["guidance"] is None
    assert first["scheduler"] == "DDPMScheduler" and first["steps"] == 2
    assert first["size"] == [16, 16] and first["dtype"] == "float32" and first["device"] == "cpu"
    assert first["model"] == str(models["ddpm"].resolve())
    assert first["seed"] == synth.image_seed(0, "a", 0)
    assert len({line["seed"] for line in lines}) == 6
    # DDPM draws fresh noise at every step too: the per-image generator covers it.
    assert_regenerates(out, lines[3], models["ddpm"])
    # The output is an image folder the trainer reads (manifest and hidden files ignored).
    dataset = build_dataset("imagefolder", out)
    assert len(dataset) == 6 and list(dataset.classes) == ["a", "b"]
    report = json.loads((out / "duplicates.json").read_text())
    assert report["threshold"] == 4 and set(report["classes"]) == {"a", "b"}


def test_class_conditional_pipeline(
    runner: CliRunner, tmp_path: Path, models: dict[str, Path]
) -> None:
    out = tmp_path / "dit"
    args = ["--model", str(models["dit"]), "--out", str(out), "--steps", "2"]
    invoke(runner, [*args, "--classes", "goldfish,Tench,7", "--images-per-class", "2"])
    assert pngs(out) == {"7": 2, "Tench": 2, "goldfish": 2}
    lines = manifest(out)
    ids = {line["class"]: line["class_id"] for line in lines}
    assert ids == {"goldfish": 1, "Tench": 0, "7": 7}  # labels (any case), then integers
    assert {line["kind"] for line in lines} == {"class"}
    assert lines[0]["guidance"] == 4.0 and lines[0]["prompt"] is None  # DiT's default guidance
    assert lines[0]["scheduler"] == "DDIMScheduler"
    assert_regenerates(out, lines[-1], models["dit"])

    # A name that is not a label: one line, with the close labels.
    line = error_line(
        invoke(runner, [*args, "--classes", "shark", "--out", str(tmp_path / "x")], 1)
    )
    assert "not a label" in line and "great white shark" in line
    # No classes: ids 0-9, named by their (shortest) label.
    out2 = tmp_path / "dit-default"
    invoke(runner, [*args, "--out", str(out2), "--images-per-class", "1", "--guidance", "1"])
    assert [e["class"] for e in manifest(out2)] == ["tench", "goldfish", "great white shark"] + [
        str(i) for i in range(3, 10)
    ]
    assert [e["class_id"] for e in manifest(out2)] == list(range(10))


def test_text_to_image_pipeline(runner: CliRunner, tmp_path: Path, models: dict[str, Path]) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("# fruit\napple\n\nbanana_split\n")
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}.\nart of the {}\n")
    out = tmp_path / "sd"
    common = ["--model", str(models["sd"]), "--steps", "2", "--size", "16", "--batch-size", "4"]
    invoke(
        runner,
        [
            *common,
            "--out",
            str(out),
            "--classes-file",
            str(classes),
            "--templates-file",
            str(templates),
            "--images-per-class",
            "3",
            "--guidance",
            "3.5",
        ],
    )
    assert pngs(out) == {"apple": 3, "banana_split": 3}
    lines = manifest(out)
    assert [line["prompt"] for line in lines] == [
        "a photo of an apple.",
        "art of the apple",
        "a photo of an apple.",
        "a photo of a banana split.",
        "art of the banana split",
        "a photo of a banana split.",
    ]
    assert lines[0]["kind"] == "text" and lines[0]["pipeline"] == "StableDiffusionPipeline"
    assert lines[0]["scheduler"] == "PNDMScheduler" and lines[0]["guidance"] == 3.5
    assert lines[0]["size"] == [16, 16] and lines[0]["class_id"] is None
    # Same prompt, different seeds: different images.
    assert not np.array_equal(pixels(out / lines[0]["file"]), pixels(out / lines[2]["file"]))
    assert_regenerates(out, lines[4], models["sd"])

    # No classes: the CIFAR-10 names and the built-in templates (three images: --limit).
    out2 = tmp_path / "sd-default"
    output = invoke(
        runner, [*common, "--out", str(out2), "--images-per-class", "1", "--limit", "3"]
    )
    assert [e["class"] for e in manifest(out2)] == ["airplane", "automobile", "bird"]
    assert manifest(out2)[0]["prompt"] == "a photo of an airplane."
    assert "7 images still to make" in output


# --------------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------------


def test_resume_after_interruption_and_crash_debris(
    runner: CliRunner, tmp_path: Path, models: dict[str, Path]
) -> None:
    out = tmp_path / "resume"
    args = ["--model", str(models["ddpm"]), "--out", str(out), "--classes", "a,b"]
    args += ["--images-per-class", "4", "--steps", "2", "--batch-size", "3"]
    output = invoke(runner, [*args, "--limit", "4"])
    assert "4 images still to make" in output
    assert pngs(out) == {"a": 4} and len(manifest(out)) == 4
    kept = (out / "a/000000.png").read_bytes()

    # Debris of killed runs: a half-written temporary file whose manifest line never came, a
    # temporary file of the atomic writer's pattern, a listed image still under its temporary
    # name (killed between its manifest line and the rename), a listed image whose file is
    # gone, a truncated last line, and a temporary manifest.
    (out / "b").mkdir()
    (out / "b/.000001.png.tmp").write_bytes(b"\x89PNG half")
    (out / "b/.000003.png.x7k2_q9a.tmp").write_bytes(b"\x89PNG half")
    listed = (out / "a/000001.png").read_bytes()
    (out / "a/000001.png").rename(out / "a/.000001.png.tmp")
    (out / "a/000003.png").unlink()
    with (out / "manifest.jsonl").open("a") as f:
        f.write('{"file": "b/000000.png", "cla')
    (out / ".manifest.jsonl.k3j_x9q2.tmp").write_text("{}")
    assert [e["file"] for e in synth.read_manifest(out)] == [f"a/{i:06d}.png" for i in range(4)]

    output = invoke(runner, args)
    assert "resuming: 3 image(s)" in output and "restored 1" in output
    assert "removed 3" in output and "dropped 1" in output and "forgot 1" in output
    assert pngs(out) == {"a": 4, "b": 4}
    assert (out / "a/000001.png").read_bytes() == listed
    lines = manifest(out)
    assert sorted(line["file"] for line in lines) == [
        f"{c}/{i:06d}.png" for c in "ab" for i in range(4)
    ]
    assert [line["file"] for line in lines[3:]] == ["a/000003.png"] + [
        f"b/{i:06d}.png" for i in range(4)
    ]  # only the missing images were made, in order
    assert sorted(p.name for p in out.rglob(".*") if p.name != ".synth.lock") == []
    assert (out / "a/000000.png").read_bytes() == kept
    assert_regenerates(out, lines[-2], models["ddpm"])

    # The same command again: nothing to do, and the model is not even loaded.
    def no_loading(*_: Any, **__: Any) -> Any:
        raise AssertionError("the model should not be loaded")

    before = (out / "manifest.jsonl").read_bytes()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synth.generation, "load_pipeline", no_loading)
        assert "nothing new to generate" in invoke(runner, args)
    assert (out / "manifest.jsonl").read_bytes() == before
    # Other settings into the same directory are refused.
    line = error_line(invoke(runner, [*args, "--steps", "3"], 1))
    assert "steps=2" in line and "new --out" in line


def test_ctrl_c_keeps_finished_images(
    runner: CliRunner, tmp_path: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "interrupted"
    args = ["--model", str(models["ddpm"]), "--out", str(out), "--classes", "a"]
    args += ["--images-per-class", "5", "--steps", "2", "--batch-size", "2"]
    encode = synth.store._encode_png
    calls = {"n": 0}

    def killed_on_third(image: Image.Image) -> bytes:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return encode(image)

    monkeypatch.setattr(synth.store, "_encode_png", killed_on_third)
    output = invoke(runner, args, 130)
    assert "interrupted" in output and "stopped after 2 new images" in output
    assert [e["file"] for e in manifest(out)] == ["a/000000.png", "a/000001.png"]
    assert sorted(p.name for p in (out / "a").iterdir()) == ["000000.png", "000001.png"]
    monkeypatch.setattr(synth.store, "_encode_png", encode)
    invoke(runner, args)
    assert [e["index"] for e in manifest(out)] == [0, 1, 2, 3, 4] and pngs(out) == {"a": 5}


# --------------------------------------------------------------------------------------------
# Classes, models, options
# --------------------------------------------------------------------------------------------


def test_class_sources_and_resizing(
    runner: CliRunner, tmp_path: Path, models: dict[str, Path]
) -> None:
    real = write_image_folder(tmp_path / "real" / "train", classes=3, per_class=1)
    (real / ".cache").mkdir()  # hidden folders are no class, as for the trainer
    out = tmp_path / "clone"
    common = ["--model", str(models["ddpm"]), "--steps", "2", "--images-per-class", "1"]
    invoke(runner, [*common, "--out", str(out), "--classes-from", str(real), "--size", "24"])
    assert pngs(out) == {"class_0": 1, "class_1": 1, "class_2": 1}
    lines = manifest(out)
    assert lines[0]["size"] == [24, 24] and Image.open(out / lines[0]["file"]).size == (24, 24)
    assert_regenerates(out, lines[1], models["ddpm"])

    # The dataset root (train/ and val/) instead of a split: said in one line.
    write_image_folder(tmp_path / "real" / "val", classes=3, per_class=1)
    line = error_line(
        invoke(
            runner, [*common, "--out", str(tmp_path / "x"), "--classes-from", str(real.parent)], 1
        )
    )
    assert "split folders" in line and str(real) in line
    # Two sources at once.
    classes = tmp_path / "c.txt"
    classes.write_text("x\n")
    both = ["--classes", "a", "--classes-file", str(classes), "--out", str(tmp_path / "y")]
    assert "give the classes once" in error_line(invoke(runner, [*common, *both], 1))
    # Repeated names, a missing file.
    assert "repeated" in error_line(
        invoke(runner, [*common, "--classes", "a,b,a", "--out", str(tmp_path / "z")], 1)
    )
    missing = ["--classes-file", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "z")]
    assert "no such file" in error_line(invoke(runner, [*common, *missing], 1))


def test_unreachable_model_is_one_line(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = ["--out", str(tmp_path / "out"), "--classes", "a", "--images-per-class", "1"]
    line = error_line(invoke(runner, ["--model", "/nonexistent/sd-model", *out], 1))
    assert "no such directory" in line and "--model PATH" in line

    (tmp_path / "empty").mkdir()
    line = error_line(invoke(runner, ["--model", str(tmp_path / "empty"), *out], 1))
    assert "cannot load a diffusers pipeline" in line and "model_index.json" in line

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    line = error_line(invoke(runner, ["--model", "syn2co-test/no-such-model", *out], 1))
    assert "cannot be reached" in line and "HF_HUB_OFFLINE" in line and "--model PATH" in line


def test_bad_options_and_directories(
    runner: CliRunner, tmp_path: Path, models: dict[str, Path]
) -> None:
    base = ["--model", str(models["ddpm"]), "--classes", "a", "--steps", "2"]
    out = ["--out", str(tmp_path / "o")]
    assert "--images-per-class" in error_line(
        invoke(runner, [*base, *out, "--images-per-class", "0"], 1)
    )
    assert "--dup-threshold" in error_line(
        invoke(runner, [*base, *out, "--dup-threshold", "65"], 1)
    )
    line = error_line(invoke(runner, [*base, *out, "--kind", "text"], 1))
    assert "takes no 'prompt'" in line
    # A directory that syn2co-train synth did not make is never touched.
    foreign = write_image_folder(tmp_path / "foreign", classes=1, per_class=2)
    before = sorted(p.name for p in (foreign / "class_0").iterdir())
    line = error_line(invoke(runner, [*base, "--out", str(foreign)], 1))
    assert "not made by syn2co-train synth" in line
    assert sorted(p.name for p in (foreign / "class_0").iterdir()) == before


# --------------------------------------------------------------------------------------------
# Seeds and the near-duplicate guard
# --------------------------------------------------------------------------------------------


def test_image_seeds_are_stable_and_independent() -> None:
    assert synth.image_seed(0, "cat", 3) == synth.image_seed(0, "cat", 3)
    seeds = {synth.image_seed(s, c, i) for s in (0, 1) for c in ("cat", "dog") for i in range(50)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)


def test_dhash_and_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]
    gradient = Image.fromarray(np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1)))
    hashes = [synth.dhash(im) for im in (*noise, gradient)]
    assert hashes[3] == 2**64 - 1  # brighter to the right everywhere: all 64 bits set
    assert synth.dhash(noise[0].copy()) == hashes[0]
    slightly = np.asarray(noise[0]).astype(int) + rng.integers(-2, 3, (32, 32, 3))
    near = synth.dhash(Image.fromarray(np.clip(slightly, 0, 255).astype(np.uint8)))
    assert bin(near ^ hashes[0]).count("1") <= 4
    pairs = synth.near_duplicate_pairs([hashes[0], hashes[1], near, hashes[0]], threshold=4)
    assert {(i, j) for i, j, _ in pairs} == {(0, 2), (0, 3), (2, 3)}
    assert all(i < j for i, j, _ in pairs)

    # Against brute force, with numpy's popcount and with the byte-table fallback.
    many = rng.integers(0, 2**63, 300, dtype=np.uint64)
    many[::7] = many[0]
    many[1::11] ^= np.uint64(0b101)
    expected = {
        (i, j, bin(int(a) ^ int(b)).count("1"))
        for i, a in enumerate(many)
        for j, b in enumerate(many)
        if i < j and bin(int(a) ^ int(b)).count("1") <= 3
    }
    assert set(synth.near_duplicate_pairs(many, 3)) == expected
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    assert set(synth.near_duplicate_pairs(many, 3)) == expected
    assert synth.near_duplicate_pairs([], 4) == []


def test_duplicate_guard_reports_a_collapsed_generator(
    runner: CliRunner, tmp_path: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synth.jobs, "image_seed", lambda seed, name, index: 1234)
    out = tmp_path / "collapsed"
    args = ["--model", str(models["ddpm"]), "--out", str(out), "--classes", "a,b"]
    output = invoke(runner, [*args, "--images-per-class", "3", "--steps", "2"])
    assert "6 near-duplicate pairs" in output
    report = json.loads((out / "duplicates.json").read_text())
    assert report["classes"]["a"]["pairs"] == 3 and report["classes"]["b"]["pairs"] == 3
    assert ["a/000000.png", "a/000001.png", 0] in report["classes"]["a"]["listed"]


def _shipped(name: str) -> list[str]:
    text = (Path(synth.__file__).parents[1] / "data" / name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_fake_it_prompts_for_imagenet100(
    runner: CliRunner, tmp_path: Path, models: dict[str, Path]
) -> None:
    table = {row.split("\t")[0]: row.split("\t") for row in _shipped("imagenet100_classes.tsv")}
    scenes = _shipped("places365_scenes.txt")
    assert len(table) == 100 and len(scenes) == len(set(scenes)) == 344
    assert table["n02090622"][1:3] == ["borzoi", "wolfhound"]  # WordNet 3.0, written by hand
    assert table["n03947888"][1:3] == ["pirate", "ship"]
    out = tmp_path / "fake"
    common = ["--model", str(models["sd"]), "--steps", "2", "--size", "16", "--batch-size", "3"]
    args = [*common, "--out", str(out), "--classes-from", "imagenet100", "--prompts", "fake-it"]
    invoke(runner, [*args, "--images-per-class", "2", "--limit", "6", "--seed", "5"])
    lines = manifest(out)
    assert len(lines) == 6
    first = sorted(table)[:3]  # the classes in label order: sorted WordNet ids
    assert [line["class"] for line in lines] == [c for c in first for _ in range(2)]
    assert sorted(pngs(out)) == first
    for line in lines:
        wnid, name, hypernym = table[line["class"]][:3]
        scene = scenes[image_seed(5, wnid, line["index"]) % len(scenes)]
        assert line["prompt"] == f"{name}, {hypernym} inside {scene}"
        assert line["guidance"] == 2.0 and line["seed"] == image_seed(5, wnid, line["index"])
    assert_regenerates(out, lines[0], models["sd"])
    # the template prompts use the class names too, not the WordNet ids
    plain = tmp_path / "plain"
    invoke(runner, [*common, "--out", str(plain), "--classes-from", "imagenet100", "--limit", "1"])
    assert manifest(plain)[0]["prompt"] == f"a photo of a {table[first[0]][1]}."
    # classes without a known hypernym: one clear line, before the model loads
    bad = invoke(
        runner,
        [*common, "--out", str(tmp_path / "x"), "--classes", "cat", "--prompts", "fake-it"],
        1,
    )
    assert "needs each class's WordNet hypernym" in error_line(bad)
    assert not (tmp_path / "x").exists()
