"""Tests of reference_trainer.evaluate: feature extraction, weighted kNN, linear probe."""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
import torch
from torch import Tensor, nn

from reference_trainer.evaluate import (
    LinearProbeSettings,
    extract_features,
    fingerprint,
    knn_accuracy,
    knn_classify,
    knn_evaluate,
    knn_predict,
    knn_probe,
    linear_probe,
)

timm = pytest.importorskip("timm")

# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def reference_knn(
    train_f: Tensor, train_y: Tensor, test_f: Tensor, *, k: int, temperature: float, classes: int
) -> list[int]:
    """Weighted kNN written plainly: one test sample at a time, in float64."""
    preds = []
    train = train_f.double()
    for q in test_f.double():
        sims = [float(q @ t / (q.norm() * t.norm())) for t in train]
        nearest = sorted(range(len(sims)), key=lambda j: sims[j], reverse=True)[:k]
        votes = [0.0] * classes
        for j in nearest:
            votes[int(train_y[j])] += math.exp(sims[j] / temperature)
        preds.append(max(range(classes), key=lambda c: votes[c]))  # first class on a tie
    return preds


def clustered(n: int, dim: int, classes: int, spread: float, seed: int) -> tuple[Tensor, Tensor]:
    """Gaussian clusters around random class means; features (n, dim), labels (n,)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dim, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    return means[labels] + spread * torch.randn(n, dim, generator=g), labels


COLORS = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])


def color_images(n_per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """An easy 4-class task: noise images (n, 3, 32, 32) whose mean colour gives the class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(n_per_class)
    images = torch.randn(labels.shape[0], 3, 32, 32, generator=g)
    return images + 0.7 * COLORS[labels][:, :, None, None], labels


def batched(images: Tensor, labels: Tensor, size: int) -> list[tuple[Tensor, Tensor]]:
    return [(images[i : i + size], labels[i : i + size]) for i in range(0, len(labels), size)]


class AugmentingLoader:
    """Re-augments (fresh noise and flips) every time it is iterated, like a DataLoader."""

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int) -> None:
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.passes = 0

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(1000 + self.passes)
        self.passes += 1
        perm = torch.randperm(len(self.labels), generator=g)
        for i in range(0, len(perm), self.batch_size):
            idx = perm[i : i + self.batch_size]
            x = self.images[idx] + 0.3 * torch.randn(self.images[idx].shape, generator=g)
            if bool(torch.rand((), generator=g) < 0.5):
                x = x.flip(-1)
            yield x, self.labels[idx]


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(  # type: ignore[no-any-return]
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=0,
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=64,
        num_heads=2,
    )


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    state = {f"p:{n}": p.detach().clone() for n, p in module.named_parameters()}
    state.update({f"b:{n}": b.detach().clone() for n, b in module.named_buffers()})
    return state


# ----------------------------------------------------------------------------------------------
# kNN
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_knn_matches_brute_force_reference(temperature: float) -> None:
    train_f, train_y = clustered(150, 16, 5, spread=1.5, seed=0)
    test_f, _ = clustered(40, 16, 5, spread=1.5, seed=1)
    ks = (1, 5, 20, 150)
    preds = knn_predict(train_f, train_y, test_f, num_classes=5, ks=ks, temperature=temperature)
    for k in ks:
        expected = reference_knn(train_f, train_y, test_f, k=k, temperature=temperature, classes=5)
        assert preds[k].tolist() == expected, f"k={k}"
        single = knn_classify(train_f, train_y, test_f, num_classes=5, k=k, temperature=temperature)
        assert torch.equal(single, preds[k])
    # the reference is not degenerate: different k give different predictions here
    assert len({tuple(p.tolist()) for p in preds.values()}) > 1


def test_knn_separable_clusters_give_100_percent() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.eye(8)[:4] * 5.0  # four orthogonal class directions
    train_y = torch.arange(4).repeat(30)
    test_y = torch.arange(4).repeat(10)
    train_f = means[train_y] + 0.1 * torch.randn(120, 8, generator=g)
    test_f = means[test_y] + 0.1 * torch.randn(40, 8, generator=g)
    result = knn_evaluate(train_f, train_y, test_f, test_y, num_classes=4, ks=(1, 20, 100))
    assert result.top1 == {1: 100.0, 20: 100.0, 100: 100.0}
    assert knn_accuracy(train_f, train_y, test_f, test_y, num_classes=4, k=20) == 100.0


def test_knn_accuracy_counts_correct_predictions() -> None:
    train_f, train_y = clustered(100, 8, 4, spread=2.0, seed=2)
    test_f, test_y = clustered(50, 8, 4, spread=2.0, seed=3)
    pred = knn_classify(train_f, train_y, test_f, num_classes=4, k=7)
    expected = 100.0 * sum(int(p == t) for p, t in zip(pred, test_y, strict=True)) / 50
    assert knn_accuracy(train_f, train_y, test_f, test_y, num_classes=4, k=7) == pytest.approx(
        expected
    )
    assert 0.0 < expected < 100.0  # a task where the count is informative


def test_knn_chunking_gives_identical_predictions() -> None:
    train_f, train_y = clustered(200, 12, 6, spread=1.5, seed=4)
    test_f, _ = clustered(53, 12, 6, spread=1.5, seed=5)
    ks = (3, 20)
    full = knn_predict(train_f, train_y, test_f, num_classes=6, ks=ks, chunk_size=10_000)
    for chunk in (1, 7, 52):
        chunked = knn_predict(train_f, train_y, test_f, num_classes=6, ks=ks, chunk_size=chunk)
        for k in ks:
            assert torch.equal(chunked[k], full[k]), f"chunk_size={chunk}, k={k}"


def test_knn_tiny_temperature_is_nearest_neighbour_without_overflow() -> None:
    # exp(s / 1e-4) overflows float32; the votes must stay finite and the nearest wins
    train_f, train_y = clustered(120, 8, 4, spread=2.0, seed=6)
    test_f, _ = clustered(60, 8, 4, spread=2.0, seed=7)
    pred = knn_classify(train_f, train_y, test_f, num_classes=4, k=30, temperature=1e-4)
    nearest = knn_classify(train_f, train_y, test_f, num_classes=4, k=1)
    assert torch.equal(pred, nearest)


def test_knn_rejects_bad_arguments() -> None:
    train_f, train_y = clustered(10, 4, 2, spread=1.0, seed=8)
    with pytest.raises(ValueError, match="k <= 10"):
        knn_classify(train_f, train_y, train_f, num_classes=2, k=11)
    with pytest.raises(ValueError, match="k <= 10"):
        knn_evaluate(train_f, train_y, train_f, train_y, num_classes=2, ks=(5, 200))
    with pytest.raises(ValueError, match=">= 1"):
        knn_classify(train_f, train_y, train_f, num_classes=2, k=0)
    with pytest.raises(ValueError, match=r"labels in \[0, 2\)"):
        knn_classify(train_f, train_y + 1, train_f, num_classes=2, k=3)
    with pytest.raises(ValueError, match="to match train_features"):
        knn_classify(train_f, train_y, train_f[:, :3], num_classes=2, k=3)
    with pytest.raises(ValueError, match="temperature"):
        knn_classify(train_f, train_y, train_f, num_classes=2, k=3, temperature=0.0)


def test_knn_result_to_dict_is_json() -> None:
    train_f, train_y = clustered(30, 4, 3, spread=1.0, seed=9)
    result = knn_evaluate(train_f, train_y, train_f, train_y, num_classes=3, ks=(1, 5))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["top1"] == {"1": result.top1[1], "5": result.top1[5]}
    assert data["top1"]["1"] == 100.0  # each sample is its own nearest neighbour
    assert (data["num_train"], data["num_test"], data["num_classes"]) == (30, 30, 3)


# ----------------------------------------------------------------------------------------------
# Feature extraction
# ----------------------------------------------------------------------------------------------


class EvalBatch(NamedTuple):
    images: Tensor
    labels: Tensor
    skipped: int


class AttrBatch:
    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels


class ModeRecorder(nn.Module):
    """Linear map with dropout; records the mode of every forward call."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Dropout(0.5))
        self.modes: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.modes.append(self.training)
        return self.net(x)  # type: ignore[no-any-return]


@pytest.mark.parametrize("start_training", [True, False])
def test_extract_features_runs_in_eval_mode_and_restores_mode(start_training: bool) -> None:
    model = ModeRecorder()
    model.train(start_training)
    x = torch.randn(10, 3, 2, 2)
    y = torch.arange(10) % 3
    loader: list[Any] = [(x[:4], y[:4]), EvalBatch(x[4:7], y[4:7], 0), AttrBatch(x[7:], y[7:])]
    feats, labels = extract_features(model, loader, device="cpu", normalize=False)
    assert model.training is start_training
    assert all(m is False for m in model.modes) and len(model.modes) == 3
    with torch.no_grad():
        expected = model.net.eval()(x)  # dropout off: the eval-mode output
    assert torch.allclose(feats, expected)
    assert torch.equal(labels, y) and labels.dtype == torch.long
    assert feats.dtype == torch.float32 and not feats.requires_grad


def test_extract_features_normalizes_and_restores_mode_on_error() -> None:
    model = ModeRecorder().train()
    x = torch.randn(6, 3, 2, 2)
    feats, _ = extract_features(model, [(x, torch.zeros(6, dtype=torch.long))], device="cpu")
    with torch.no_grad():
        raw = model.net.eval()(x)
    assert torch.allclose(feats, raw / raw.norm(dim=1, keepdim=True))
    model.train()
    with pytest.raises(TypeError, match="batch"):
        extract_features(model, [(x, torch.zeros(6, dtype=torch.long)), "bad"], device="cpu")
    assert model.training
    with pytest.raises(ValueError, match="at least one batch"):
        extract_features(model, [], device="cpu")


class NormNet(nn.Module):
    """Conv, BatchNorm, dropout, pooled: a backbone whose BatchNorm would move in train mode."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 1)
        self.norm = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.norm(self.conv(x)).mean(dim=(2, 3)))  # type: ignore[no-any-return]


def test_extract_features_restores_every_submodule_mode() -> None:
    model = NormNet().train()
    model.norm.eval()  # a probe's train mode: norm layers with running statistics in eval mode
    x = torch.randn(8, 3, 4, 4) * 3 + 1
    extract_features(model, [(x, torch.zeros(8, dtype=torch.long))], device="cpu")
    assert model.training and model.drop.training and model.conv.training
    assert not model.norm.training  # not switched back to train mode with its parent


def test_probe_in_train_mode_keeps_batchnorm_statistics() -> None:
    model = NormNet().eval()
    before = fingerprint(model)
    stats = model.norm.running_mean.clone()
    norm_modes: list[bool] = []
    model.norm.register_forward_pre_hook(lambda m, i: norm_modes.append(m.training))
    drop_modes: list[bool] = []
    model.drop.register_forward_pre_hook(lambda m, i: drop_modes.append(m.training))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 4, 4, generator=g) * 3 + 1, torch.arange(16) % 2
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    settings = LinearProbeSettings(mode="augmented", epochs=2, backbone_mode="train")
    result = linear_probe(model, loader, loader, num_classes=2, device="cpu", settings=settings)
    assert result.backbone_unchanged and fingerprint(model) == before
    assert torch.equal(model.norm.running_mean, stats)
    assert norm_modes and not any(norm_modes)  # BatchNorm in eval mode through every pass
    assert True in drop_modes  # dropout active while the probe trains
    assert not model.training and not model.norm.training  # the modes given back


# ----------------------------------------------------------------------------------------------
# Fingerprint
# ----------------------------------------------------------------------------------------------


def test_fingerprint_sees_every_bit_of_parameters_and_buffers() -> None:
    linear, norm = nn.Linear(4, 3), nn.BatchNorm1d(3)
    model = nn.Sequential(linear, norm)
    base = fingerprint(model)
    twin = copy.deepcopy(model)
    assert fingerprint(twin) == base
    twin[0].requires_grad_(False)
    twin.eval()
    assert fingerprint(twin) == base  # flags and mode are not weights

    mutated = copy.deepcopy(linear)
    with torch.no_grad():
        w = mutated.weight.view(-1)
        w[5] = torch.nextafter(w[5], torch.tensor(math.inf))  # one ulp
    assert fingerprint(nn.Sequential(mutated, norm)) != base

    buffered = copy.deepcopy(norm)
    assert buffered.running_mean is not None
    buffered.running_mean[0] += 1.0
    assert fingerprint(nn.Sequential(linear, buffered)) != base

    recast = copy.deepcopy(model).double()
    assert fingerprint(recast) != base


# ----------------------------------------------------------------------------------------------
# Linear probe
# ----------------------------------------------------------------------------------------------


def check_untouched(
    model: nn.Module, before: dict[str, Tensor], flags: dict[str, bool], result: Any
) -> None:
    after = snapshot(model)
    assert after.keys() == before.keys()
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name
        assert after[name].dtype == tensor.dtype
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert result.fingerprint_before == result.fingerprint_after == fingerprint(model)
    assert result.backbone_unchanged


def frozen_mixed(model: nn.Module) -> dict[str, bool]:
    """Freeze the patch embedding only, so restoring all-True flags would be caught."""
    for p in model.patch_embed.parameters():  # type: ignore[union-attr]
        p.requires_grad_(False)
    return {n: p.requires_grad for n, p in model.named_parameters()}


def test_linear_probe_cached_learns_and_leaves_backbone_untouched() -> None:
    model = tiny_vit().train()
    flags = frozen_mixed(model)
    before = snapshot(model)
    train = batched(*color_images(24, seed=0), size=32)
    val = batched(*color_images(12, seed=1), size=32)
    epochs_seen: list[dict[str, float]] = []
    result = linear_probe(
        model,
        train,
        val,
        num_classes=4,
        device="cpu",
        settings=LinearProbeSettings(epochs=15, batch_size=16, base_lr=0.5, lr_reference_batch=16),
        on_epoch=epochs_seen.append,
    )
    check_untouched(model, before, flags, result)
    assert model.training
    assert result.val_top1 >= 90.0  # chance is 25
    assert result.train_top1 >= 90.0
    assert result.val_top5 == 100.0  # 4 classes: top-5 covers all of them
    assert result.epochs == 15 and len(result.history) == 15 and epochs_seen == result.history
    assert (result.num_train, result.num_val, result.mode) == (96, 48, "cached")
    assert result.lr == pytest.approx(0.5)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    # cosine per step: 96 / 16 = 6 steps per epoch; the last step of epoch e is 6 e - 1
    total = 15 * 6
    for e, entry in enumerate(result.history, start=1):
        expected = 0.5 * 0.5 * (1 + math.cos(math.pi * (6 * e - 1) / total))
        assert entry["lr"] == pytest.approx(expected)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["val_top1"] == result.val_top1 and data["backbone_unchanged"] is True


def test_linear_probe_augmented_learns_and_leaves_backbone_untouched() -> None:
    model = tiny_vit().eval()
    flags = frozen_mixed(model)
    before = snapshot(model)
    loader = AugmentingLoader(*color_images(24, seed=2), batch_size=16)
    val = batched(*color_images(12, seed=3), size=32)
    result = linear_probe(
        model,
        loader,
        val,
        num_classes=4,
        device="cpu",
        settings=LinearProbeSettings(
            mode="augmented", epochs=6, base_lr=0.5, lr_reference_batch=16, batchnorm=True
        ),
    )
    check_untouched(model, before, flags, result)
    assert not model.training
    assert loader.passes == 6  # re-augmented every epoch
    assert result.batch_size == 16 and result.mode == "augmented" and result.batchnorm
    assert result.val_top1 >= 90.0
    bn = result.classifier[0]  # type: ignore[index]
    assert isinstance(bn, nn.BatchNorm1d) and not bn.affine


def test_linear_probe_is_reproducible_from_its_seed() -> None:
    model = tiny_vit()
    train = batched(*color_images(8, seed=4), size=32)
    val = batched(*color_images(4, seed=5), size=32)

    def run(seed: int) -> tuple[list[dict[str, float]], Tensor]:
        settings = LinearProbeSettings(epochs=3, batch_size=8)
        r = linear_probe(
            model, train, val, num_classes=4, device="cpu", settings=settings, seed=seed
        )
        return r.history, r.classifier[-1].weight.detach().clone()  # type: ignore[index]

    h1, w1 = run(0)
    h2, w2 = run(0)
    _, w3 = run(1)
    assert h1 == h2 and torch.equal(w1, w2)
    assert not torch.equal(w1, w3)


class SelfModifying(nn.Module):
    """A backbone that changes one of its buffers on every forward call."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.calls: Tensor
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        self.calls.add_(1)
        return self.proj(x.mean(dim=(2, 3)))  # type: ignore[no-any-return]


def test_linear_probe_raises_when_backbone_changes_and_still_restores_flags() -> None:
    model = SelfModifying()
    model.proj.bias.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    data = batched(*color_images(2, seed=6), size=4)
    with pytest.raises(RuntimeError, match="changed"):
        linear_probe(
            model, data, data, num_classes=4, device="cpu", settings=LinearProbeSettings(epochs=1)
        )
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert model.training


def test_linear_probe_rejects_bad_arguments() -> None:
    model = tiny_vit()
    data = batched(*color_images(2, seed=7), size=4)
    loader = AugmentingLoader(*color_images(2, seed=7), batch_size=4)
    augmented = LinearProbeSettings(mode="augmented")
    with pytest.raises(ValueError, match="batch size of train_loader"):
        linear_probe(
            model,
            loader,
            data,
            num_classes=4,
            device="cpu",
            settings=LinearProbeSettings(mode="augmented", batch_size=8),
        )
    with pytest.raises(TypeError, match="len"):
        linear_probe(model, iter(data), data, num_classes=4, device="cpu", settings=augmented)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        linear_probe(
            model, data, data, num_classes=3, device="cpu", settings=LinearProbeSettings(epochs=1)
        )
    with pytest.raises(TypeError, match="settings: expected LinearProbeSettings"):
        linear_probe(model, data, data, num_classes=4, device="cpu", settings={"epochs": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"mode": "online"}, "mode"),
        ({"epochs": 0}, "epochs: expected an int >= 1, got 0"),
        ({"batch_size": 0}, "batch_size: expected an int >= 1, got 0"),
        ({"base_lr": 0.0}, "base_lr: expected a number in (0.0, inf]"),
        ({"base_lr": float("nan")}, "base_lr: expected a finite number"),
        ({"lr_reference_batch": 0}, "lr_reference_batch: expected an int >= 1"),
        ({"momentum": 1.0}, "momentum: expected a number in [0.0, 1.0)"),
        ({"momentum": 0.0}, "nesterov: needs a momentum > 0"),
        ({"weight_decay": -1e-4}, "weight_decay: expected a number in [0.0, inf]"),
        ({"epochs": 10, "warmup_epochs": 10}, "warmup_epochs: expected a number in [0.0, 10.0)"),
        ({"warmup_epochs": -0.5}, "warmup_epochs: expected a number in [0.0, 100.0)"),
        ({"warmup_lr_fraction": 2.0}, "warmup_lr_fraction: expected a number in [0.0, 1.0]"),
        ({"min_lr_fraction": -0.1}, "min_lr_fraction: expected a number in [0.0, 1.0]"),
        ({"schedule": "cycle"}, "schedule"),
        ({"schedule": "epoch", "warmup_epochs": 1}, "warmup_epochs: the per-epoch schedule"),
        ({"label_smoothing": 1.5}, "label_smoothing: expected a number in [0.0, 1.0]"),
        ({"clip_grad": -1.0}, "clip_grad: expected a number in [0.0, inf]"),
        ({"head_init": "zeros"}, "head_init"),
        ({"backbone_mode": "frozen"}, "backbone_mode"),
        ({"drop_path": 1.0}, "drop_path: expected a number in [0.0, 1.0)"),
    ],
)
def test_probe_settings_name_the_bad_value(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        LinearProbeSettings(**changes)
    with pytest.raises(TypeError, match="batchnorm: expected a bool"):
        LinearProbeSettings(batchnorm=1)  # type: ignore[arg-type]


def test_probe_lr_warms_up_linearly_then_follows_a_cosine() -> None:
    settings = LinearProbeSettings(epochs=10, base_lr=0.2, lr_reference_batch=100, warmup_epochs=2)
    peak, steps = 0.2 * 50 / 100, 4  # batch 50, 4 steps per epoch: 8 warmup, 32 in all
    lrs = [settings.lr_at(step, steps, 50) for step in range(40)]
    assert lrs[:8] == pytest.approx([peak * (s + 1) / 8 for s in range(8)])
    cosine = [peak * 0.5 * (1 + math.cos(math.pi * (s - 8) / 32)) for s in range(8, 40)]
    assert lrs[8:] == pytest.approx(cosine)
    assert lrs[7] == pytest.approx(peak) and lrs[8] == pytest.approx(peak)


def test_probe_lr_from_a_warmup_start_to_a_floor_and_per_epoch() -> None:
    settings = LinearProbeSettings(
        epochs=10,
        base_lr=0.2,
        lr_reference_batch=100,
        warmup_epochs=2,
        warmup_lr_fraction=0.1,
        min_lr_fraction=0.05,
    )
    peak, start, end = 0.1, 0.01, 0.005  # batch 50, 4 steps per epoch: 8 warmup, 40 in all
    lrs = [settings.lr_at(step, 4, 50) for step in range(42)]
    assert lrs[:8] == pytest.approx([start + (peak - start) * s / 8 for s in range(8)])
    cosine = [
        end + (peak - end) * 0.5 * (1 + math.cos(math.pi * (s - 8) / 32)) for s in range(8, 40)
    ]
    assert lrs[8:40] == pytest.approx(cosine)
    assert lrs[40:] == pytest.approx([end, end])
    per_epoch = LinearProbeSettings(epochs=4, base_lr=0.2, lr_reference_batch=100, schedule="epoch")
    expected = [peak * 0.5 * (1 + math.cos(math.pi * (s // 3) / 4)) for s in range(12)]
    assert [per_epoch.lr_at(s, 3, 50) for s in range(12)] == pytest.approx(expected)


def test_knn_probe_on_tiny_vit_is_well_above_chance() -> None:
    model = tiny_vit().train()
    before = snapshot(model)
    train = batched(*color_images(16, seed=8), size=32)
    test = batched(*color_images(8, seed=9), size=32)
    result = knn_probe(model, train, test, num_classes=4, device="cpu", ks=(5, 20))
    assert min(result.top1.values()) >= 90.0
    assert model.training
    assert all(torch.equal(v, snapshot(model)[k]) for k, v in before.items())


class Scaled(nn.Module):
    """A backbone whose features are ``scale`` times those of ``inner``."""

    def __init__(self, inner: nn.Module, scale: float) -> None:
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x) * self.scale  # type: ignore[no-any-return]


def shapes(split: str, n: int) -> Any:
    """The trainer's built-in procedural images (10 classes), evaluation transform, in order."""
    from torch.utils.data import DataLoader

    from reference_trainer.data import EvalDataset, build_dataset, collate_eval, eval_transform

    dataset = build_dataset("builtin", None, split, img_size=32, num_samples=n, seed=0)
    return DataLoader(
        EvalDataset(dataset, eval_transform(32)), batch_size=100, collate_fn=collate_eval
    )


def increases(history: list[dict[str, float]]) -> list[float]:
    losses = [h["loss"] for h in history]
    return [later - earlier for earlier, later in itertools.pairwise(losses)]


def test_default_probe_loss_goes_down_on_features_of_a_large_scale() -> None:
    model = Scaled(tiny_vit(), 100.0)
    train, val = shapes("train", 400), shapes("val", 100)
    result = linear_probe(model, train, val, num_classes=10, device="cpu")  # the defaults
    assert result.settings == LinearProbeSettings(batch_size=256)
    assert max(increases(result.history)) <= 0.01  # minibatch noise at most
    assert result.history[-1]["loss"] < result.history[0]["loss"] - 0.1
    bn, linear = result.classifier  # type: ignore[misc]
    assert isinstance(bn, nn.BatchNorm1d) and not bn.affine and isinstance(linear, nn.Linear)
    # Without the BatchNorm the same probe diverges: the steps scale with the features.
    raw = linear_probe(
        model,
        train,
        val,
        num_classes=10,
        device="cpu",
        settings=LinearProbeSettings(batchnorm=False),
    )
    assert [type(m) for m in raw.classifier] == [nn.Linear]  # type: ignore[union-attr]
    assert raw.history[0]["loss"] > 100.0 and max(increases(raw.history)) > 100.0
    assert result.to_dict()["settings"]["batchnorm"] is True
    assert raw.to_dict()["settings"]["batchnorm"] is False


def test_default_probe_learns_a_separable_problem_from_large_features() -> None:
    model = Scaled(tiny_vit(), 100.0)
    train = batched(*color_images(32, seed=10), size=32)
    val = batched(*color_images(16, seed=11), size=32)
    result = linear_probe(model, train, val, num_classes=4, device="cpu")
    assert result.val_top1 >= 95.0  # chance is 25
    assert max(increases(result.history)) <= 0.01
