"""LARS against a hand computation, and the optimizers the trainer builds from a config."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from reference_trainer.build import build_networks, build_optimizer
from reference_trainer.config import TrainConfig
from reference_trainer.optim import LARS
from reference_trainer.resolve import resolve


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def test_lars_two_steps_match_a_hand_computation() -> None:
    """Two steps with a learning-rate change between them: weight decay enters the trust ratio,
    the learning rate sits inside the velocity, and a group with lars=False is plain momentum
    SGD without decay (SimCLR's treatment of biases and batch-norm parameters)."""
    w = nn.Parameter(torch.tensor([0.6, -0.8, 2.0], dtype=torch.float64))
    b = nn.Parameter(torch.tensor([0.5, -1.0], dtype=torch.float64))
    eta, wd, m = 0.01, 0.1, 0.9
    opt = LARS(
        [{"params": [w], "weight_decay": wd}, {"params": [b], "weight_decay": 0.0, "lars": False}],
        lr=1.0,
        momentum=m,
        eta=eta,
    )
    grads_w = [[0.3, 0.1, -0.2], [-0.5, 0.4, 0.0]]
    grads_b = [[1.0, 2.0], [-1.0, 0.5]]
    lrs = [1.0, 0.5]
    # The reference, in plain Python.
    ww, bb = [0.6, -0.8, 2.0], [0.5, -1.0]
    vw, vb = [0.0] * 3, [0.0] * 2
    for step in range(2):
        d = [g + wd * x for g, x in zip(grads_w[step], ww, strict=True)]
        trust = eta * norm(ww) / norm(d)
        vw = [m * v + lrs[step] * trust * di for v, di in zip(vw, d, strict=True)]
        ww = [x - v for x, v in zip(ww, vw, strict=True)]
        vb = [m * v + lrs[step] * g for v, g in zip(vb, grads_b[step], strict=True)]
        bb = [x - v for x, v in zip(bb, vb, strict=True)]
        # The optimizer.
        for group in opt.param_groups:
            group["lr"] = lrs[step]
        w.grad = torch.tensor(grads_w[step], dtype=torch.float64)
        b.grad = torch.tensor(grads_b[step], dtype=torch.float64)
        opt.step()
    assert w.detach().tolist() == pytest.approx(ww, rel=1e-6, abs=0)
    assert b.detach().tolist() == pytest.approx(bb, rel=1e-6, abs=0)
    assert w.detach().tolist() != pytest.approx([0.6, -0.8, 2.0], rel=1e-9)


def test_lars_trust_ratio_is_one_for_zero_weights_or_gradients() -> None:
    w = nn.Parameter(torch.zeros(3))
    opt = LARS([w], lr=0.5, momentum=0.0)
    w.grad = torch.tensor([1.0, 2.0, 3.0])
    opt.step()  # ||w|| = 0: the plain step
    assert w.detach().tolist() == pytest.approx([-0.5, -1.0, -1.5])
    w.grad = torch.zeros(3)
    before = w.detach().clone()
    opt.step()  # ||d|| = 0 (no decay): nothing moves, no NaN
    assert torch.equal(w.detach(), before)


def test_lars_state_round_trips() -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    opt_a = LARS(a.parameters(), lr=0.1, weight_decay=1e-3)
    x = torch.randn(8, 4)
    a(x).square().sum().backward()
    opt_a.step()
    opt_b = LARS(b.parameters(), lr=0.1, weight_decay=1e-3)
    b.load_state_dict(a.state_dict())
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as from a checkpoint file
    for model, opt in ((a, opt_a), (b, opt_b)):
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"lr": -1.0}, "lr"),
        ({"lr": 0.1, "momentum": 1.0}, "momentum"),
        ({"lr": 0.1, "eta": 0.0}, "eta"),
    ],
)
def test_lars_rejects_bad_arguments(bad: dict[str, float], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        LARS([nn.Parameter(torch.zeros(1))], **bad)


@pytest.mark.parametrize(
    ("options", "kind", "decay_all"),
    [
        ({"method": "moby"}, torch.optim.AdamW, False),
        ({"method": "moby", "optimizer": "sgd"}, torch.optim.SGD, False),
        ({"method": "moby", "optimizer": "lars"}, LARS, False),
        ({"method": "mocov2"}, torch.optim.SGD, True),  # MoCo v2 decays every parameter
        ({"method": "moby", "optimizer": "lars", "weight_decay_exclude": "none"}, LARS, True),
    ],
)
def test_build_optimizer_groups(
    options: dict[str, str], kind: type[torch.optim.Optimizer], decay_all: bool
) -> None:
    """Biases and norms get no weight decay, and no LARS adaptation, unless the method (MoCo
    v2) or --weight-decay-exclude none decays every parameter."""
    cfg = TrainConfig.from_dict(
        {"depth": 1, "embed_dim": 32, "num_heads": 2, "proj_hidden": 64, "proj_dim": 32} | options
    )
    resolved = resolve(cfg, train_size=64)
    online, _ = build_networks(resolved.config, resolved.method, resolved.method_settings())
    opt = build_optimizer(resolved, online, torch.device("cpu"))
    assert type(opt) is kind
    decay, no_decay = opt.param_groups
    assert (
        decay["weight_decay"] == resolved.config.weight_decay > 0 and no_decay["weight_decay"] == 0
    )
    n_params = len([p for p in online.parameters() if p.requires_grad])
    assert len(decay["params"]) + len(no_decay["params"]) == n_params
    if decay_all:
        assert not no_decay["params"]
    else:
        assert all(p.ndim > 1 for p in decay["params"])  # matrices and convolutions
        assert any(p.ndim == 1 for p in no_decay["params"])  # biases and norms
    if kind is LARS:
        assert decay["lars"] is True and no_decay["lars"] is False
