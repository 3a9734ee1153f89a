"""The official evaluation protocols: linear probes as SynCo v2 and MoCo v3 run them, and kNN.

``syn2co-train eval linear --protocol NAME`` takes every probe setting from one of
:data:`LINEAR_PROTOCOLS`; options given on the command line override single values. Sources:
"synco-v2" is github.com/giakoumoglou/synco-v2 at commit
61528c54c53e6bb7a1fa722059f70bd382eae454, "moco-v3" is github.com/facebookresearch/moco-v3 at
commit c349e6e24f40d3fedb22d973f92defa4cedf37a7.

Known differences from the official scripts: SynCo v2's probe uses timm's cosine scheduler, whose
cosine runs over the whole run with the warmup laid over its start, while here the cosine starts
after the warmup (:func:`syn2co.schedules.cosine_schedule`; at 5 warmup epochs of 100 the two
differ by at most 4.7% of the peak rate); the probes run on one process (the official ones
shard the same global batch over GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["KNN_KS", "KNN_TEMPERATURE", "LINEAR_PROTOCOLS", "LinearProtocol"]

HeadInit = Literal["normal", "xavier", "trunc-normal", "backbone"]


@dataclass(frozen=True)
class LinearProtocol:
    """Every setting of a linear probe.

    Attributes:
        name: What ``--protocol`` takes.
        summary: One line for ``--help`` and the docs.
        mode: ``augmented`` (random crops and flips every epoch, features recomputed) or
            ``cached`` (features of the evaluation transform, extracted once).
        epochs: Training epochs.
        batch_size: Global batch size.
        base_lr: Learning rate at ``lr_reference_batch`` (scaled linearly with the batch).
        lr_reference_batch: The batch size ``base_lr`` refers to.
        warmup_epochs: Linear warmup, in epochs.
        warmup_lr_fraction: Learning rate at step 0, as a fraction of the peak.
        min_lr_fraction: Learning rate the cosine ends at, as a fraction of the peak.
        schedule: ``step`` (cosine per optimizer step) or ``epoch`` (constant within an epoch).
        momentum: SGD momentum.
        nesterov: Nesterov momentum.
        weight_decay: SGD weight decay.
        label_smoothing: Label smoothing of the cross-entropy.
        clip_grad: Gradient-norm clip of the classifier (0 = off).
        backbone_mode: ``train`` (dropout and drop-path active while the probe trains; norm
            layers with running statistics stay in eval mode so that no buffer changes) or
            ``eval``. The backbone's weights never change either way.
        drop_path: Stochastic depth of the backbone during the probe (None: as trained).
        head_init: ``normal`` (N(0, 0.01), bias 0), ``xavier`` (xavier uniform, bias 0),
            ``trunc-normal`` (std 0.02, bias 0) or ``backbone`` (as the official backbone's
            constructor initialises its head: xavier for MoCo v3's ViT, truncated normal 0.02
            otherwise).
    """

    name: str
    summary: str
    mode: Literal["augmented", "cached"]
    epochs: int
    batch_size: int
    base_lr: float
    lr_reference_batch: int
    warmup_epochs: float = 0.0
    warmup_lr_fraction: float = 0.0
    min_lr_fraction: float = 0.0
    schedule: Literal["step", "epoch"] = "step"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    clip_grad: float = 0.0
    backbone_mode: Literal["train", "eval"] = "eval"
    drop_path: float | None = None
    head_init: HeadInit = "normal"


SYNCO_V2 = LinearProtocol(
    name="synco-v2",
    summary="SynCo v2 / MoBY eval_linear.py: 100 epochs, SGD Nesterov, label smoothing, "
    "backbone in train mode",
    mode="augmented",  # synco-v2 src/data/transform.py:153-159 (RandomResizedCrop + flip)
    epochs=100,  # synco-v2 eval_linear.py:81
    batch_size=256,  # synco-v2 src/utils/config.py:22 (64 per GPU) x 4 GPUs (README.md:103-113)
    base_lr=1.0,  # synco-v2 eval_linear.py:58,88
    lr_reference_batch=512,  # synco-v2 eval_linear.py:425
    warmup_epochs=5,  # synco-v2 eval_linear.py:82
    warmup_lr_fraction=5e-7,  # synco-v2 src/utils/config.py:74 (5e-7 x batch/512, lr 1.0)
    min_lr_fraction=5e-6,  # synco-v2 src/utils/config.py:75 (5e-6 x batch/512, lr 1.0)
    schedule="step",  # synco-v2 eval_linear.py:283 (step_update every step)
    momentum=0.9,  # synco-v2 eval_linear.py:87
    nesterov=True,  # synco-v2 src/optim/optimizer.py:46-53
    weight_decay=0.0,  # synco-v2 eval_linear.py:89
    label_smoothing=0.1,  # synco-v2 src/utils/config.py:38, eval_linear.py:157-158
    clip_grad=5.0,  # synco-v2 src/utils/config.py:76, eval_linear.py:277-279
    backbone_mode="train",  # synco-v2 eval_linear.py:227 (model.train() on the whole model)
    drop_path=0.2,  # synco-v2 eval_linear.py:59,73
    head_init="backbone",  # synco-v2 src/models/builder.py:142-146 (the backbone's own head)
)

MOCOV3 = LinearProtocol(
    name="mocov3",
    summary="MoCo v3 main_lincls.py: 90 epochs, SGD lr 3 x batch/256, batch 1024, "
    "backbone in eval mode",
    mode="augmented",  # moco-v3 main_lincls.py:272-277 (RandomResizedCrop 224 + flip)
    epochs=90,  # moco-v3 main_lincls.py:49
    batch_size=1024,  # moco-v3 main_lincls.py:53
    base_lr=3.0,  # moco-v3 CONFIG.md:144 (--lr=3 for ViT-Small)
    lr_reference_batch=256,  # moco-v3 main_lincls.py:196
    schedule="epoch",  # moco-v3 main_lincls.py:305,499-503 (cosine per epoch, no warmup)
    momentum=0.9,  # moco-v3 main_lincls.py:60
    nesterov=False,  # moco-v3 main_lincls.py:236-238
    weight_decay=0.0,  # moco-v3 main_lincls.py:62
    backbone_mode="eval",  # moco-v3 main_lincls.py:341-348
    head_init="normal",  # moco-v3 main_lincls.py:168-169 (N(0, 0.01), bias 0)
)

FAST = LinearProtocol(
    name="fast",
    summary="Features extracted once (evaluation transform), 100 epochs of SGD on them: "
    "minutes on a CPU, not a published protocol",
    mode="cached",
    epochs=100,
    batch_size=256,
    base_lr=1.0,
    lr_reference_batch=512,
)

#: The protocols by name.
LINEAR_PROTOCOLS: dict[str, LinearProtocol] = {p.name: p for p in (SYNCO_V2, MOCOV3, FAST)}

#: kNN neighbours and temperature of SynCo v2 (synco-v2 eval_knn.py:43-44, README.md:133-139).
KNN_KS: tuple[int, ...] = (10, 20, 100, 200)
KNN_TEMPERATURE = 0.07
