"""The trainer's synthetic-negative counts follow syn2co.negatives' Strategy registry.

The six built-in strategies are typed options named like their registry records (with the
records' descriptions as help); a strategy registered from this file alone is counted with
``--strategy-counts``, placed after the built-in types, and trained with.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor
from typer.testing import CliRunner

from reference_trainer.cli import app
from reference_trainer.config import TrainConfig
from reference_trainer.errors import ConfigError
from reference_trainer.resolve import resolve, strategy_counts
from syn2co.negatives import (
    STRATEGIES,
    Combination,
    InnerProducts,
    NegativeSpec,
    Strategy,
    register_strategy,
    strategies,
    unregister_strategy,
)

from .conftest import tiny_run


def test_count_options_are_the_built_in_strategies() -> None:
    fields = {f: TrainConfig.__dataclass_fields__[f] for f in TrainConfig.field_names()}
    assert set(STRATEGIES) <= set(fields)
    for record in strategies():
        if record.name in STRATEGIES:
            assert record.description in fields[record.name].metadata["help"]


def _reflect_write(
    out: Tensor, query: Tensor, picks: tuple[Tensor, ...], drawn: Tensor | None, spec: object
) -> None:
    n = picks[0]
    out.copy_(2 * (n * query).sum(-1, keepdim=True) * query - n)


def _reflect_combination(
    products: InnerProducts, drawn: Tensor | None, spec: object
) -> Combination:
    qn = products.query_dot(Combination(picks=(1.0,)))
    return Combination(query=2 * qn, picks=(-1.0,))


REFLECTED = Strategy(
    "toy_reflected",
    "2(q.n)q - n: a hard negative reflected about the query, exactly as hard",
    lambda spec, shape, generator, device: None,
    _reflect_write,
    _reflect_combination,
)


@pytest.fixture
def reflected() -> Iterator[Strategy]:
    register_strategy(REFLECTED)
    yield REFLECTED
    unregister_strategy(REFLECTED.name)


def test_strategy_counts_take_registered_strategies(reflected: Strategy) -> None:
    cfg = TrainConfig(
        negatives="synco-v2", queue_size=512, strategy_counts="toy_reflected=7", mixed=5
    )
    assert list(strategy_counts(cfg)) == ["mixed", "toy_reflected"]  # the registry's order
    spec = resolve(cfg, train_size=1000).spec
    assert spec is not None
    assert spec.counts["toy_reflected"] == 7 and spec.mixed == 5 and spec.interpolated == 128
    assert spec.slices()["toy_reflected"] == slice(spec.total - 7, spec.total)  # after the six
    assert spec == NegativeSpec(
        n_hard=256, interpolated=128, extrapolated=128, mixed=5, noisy=64, perturbed=64,
        adversarial=64, sigma=0.1, counts={"toy_reflected": 7},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (
            "toy_reflected=2",
            "'toy_reflected' is not a registered strategy; registered: interpolated",
        ),
        ("mixed=2", "give mixed's count with --mixed"),
        ("mixed", "expected NAME=COUNT"),
        ("mixed=-1", "expected NAME=COUNT"),
    ],
)
def test_strategy_counts_refuse_bad_values(value: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        resolve(TrainConfig(strategy_counts=value, queue_size=512), train_size=1000)


@pytest.mark.slow
def test_a_strategy_from_this_file_trains_with_both_paths(
    reflected: Strategy, tmp_path: Path
) -> None:
    """Reflected negatives are exactly as similar to the query as the hard negative they come
    from, so their hardness statistics equal the hard pool's; both loss paths run it."""
    for path in ("logits", "vectors"):
        run = tmp_path / path
        args = [*tiny_run(run), "--steps", "3", "--negatives-path", path]
        args += ["--n-hard", "1", "--strategy-counts", "toy_reflected=4"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        assert first["synthetic_negatives"] is True
        assert first["hardness/toy_reflected/mean"] == pytest.approx(
            first["hardness/hard_real/mean"], abs=1e-5
        )
        saved = (run / "config.yaml").read_text()
        assert "strategy_counts: toy_reflected=4" in saved
        assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 3
