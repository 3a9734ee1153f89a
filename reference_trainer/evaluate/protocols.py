"""The evaluation protocols: linear probes as SynCo v2 and MoCo v3 run them, a fast probe, and
kNN.

A linear protocol is a named :class:`~reference_trainer.evaluate.LinearProbeSettings` preset.
``syn2co-train eval linear --protocol NAME`` takes every probe setting from one of
:data:`LINEAR_PROTOCOLS` (default :data:`FAST`); options given on the command line override
single values. Sources: "synco-v2" is github.com/giakoumoglou/synco-v2 at commit
61528c54c53e6bb7a1fa722059f70bd382eae454, "moco-v3" is github.com/facebookresearch/moco-v3 at
commit c349e6e24f40d3fedb22d973f92defa4cedf37a7.

Known differences from the official scripts: SynCo v2's probe uses timm's cosine scheduler, whose
cosine runs over the whole run with the warmup laid over its start, while here the cosine starts
after the warmup (:func:`syn2co.schedules.cosine_schedule`; at 5 warmup epochs of 100 the two
differ by at most 4.7% of the peak rate); the probes run on one process (the official ones
shard the same global batch over GPUs).
"""

from __future__ import annotations

import dataclasses

from ._classifier import HeadInit
from .linear import LinearProbeSettings

__all__ = [
    "FAST",
    "KNN_KS",
    "KNN_TEMPERATURE",
    "LINEAR_PROTOCOLS",
    "MOCOV3",
    "PROTOCOL_SUMMARIES",
    "SYNCO_V2",
    "for_arch",
]

SYNCO_V2 = LinearProbeSettings(
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
    batchnorm=False,  # synco-v2 src/models/builder.py:142-146 (the backbone's own head alone)
    label_smoothing=0.1,  # synco-v2 src/utils/config.py:38, eval_linear.py:157-158
    clip_grad=5.0,  # synco-v2 src/utils/config.py:76, eval_linear.py:277-279
    backbone_mode="train",  # synco-v2 eval_linear.py:227 (model.train() on the whole model)
    drop_path=0.2,  # synco-v2 eval_linear.py:59,73
    head_init="backbone",  # synco-v2 src/models/builder.py:142-146 (the backbone's own head)
)
"""SynCo v2 / MoBY ``eval_linear.py``."""

MOCOV3 = LinearProbeSettings(
    mode="augmented",  # moco-v3 main_lincls.py:272-277 (RandomResizedCrop 224 + flip)
    epochs=90,  # moco-v3 main_lincls.py:49
    batch_size=1024,  # moco-v3 main_lincls.py:53
    base_lr=3.0,  # moco-v3 CONFIG.md:144 (--lr=3 for ViT-Small)
    lr_reference_batch=256,  # moco-v3 main_lincls.py:196
    schedule="epoch",  # moco-v3 main_lincls.py:305,499-503 (cosine per epoch, no warmup)
    momentum=0.9,  # moco-v3 main_lincls.py:60
    nesterov=False,  # moco-v3 main_lincls.py:236-238
    weight_decay=0.0,  # moco-v3 main_lincls.py:62
    batchnorm=False,  # moco-v3 main_lincls.py:168-169 (the model's own fc alone)
    backbone_mode="eval",  # moco-v3 main_lincls.py:341-348
    head_init="normal",  # moco-v3 main_lincls.py:168-169 (N(0, 0.01), bias 0)
)
"""MoCo v3 ``main_lincls.py``."""

FAST = LinearProbeSettings(batch_size=256)
"""The default of ``eval linear``: the :class:`~reference_trainer.evaluate.LinearProbeSettings`
defaults (features extracted once with the evaluation transform, BatchNorm without affine on
them, 100 epochs of SGD Nesterov at lr 0.1 x batch / 512), batch 256. Minutes on a CPU and
stable on any backbone; not a published protocol."""

#: The protocols by name; ``eval linear`` uses ``fast`` unless ``--protocol`` says otherwise.
LINEAR_PROTOCOLS: dict[str, LinearProbeSettings] = {
    "fast": FAST,
    "synco-v2": SYNCO_V2,
    "mocov3": MOCOV3,
}

#: One line per protocol, for ``--help`` and the docs.
PROTOCOL_SUMMARIES: dict[str, str] = {
    "fast": "features extracted once, BatchNorm on them, 100 epochs of SGD Nesterov at lr "
    "0.1 x batch/512, batch 256: minutes on a CPU, not a published protocol",
    "synco-v2": "SynCo v2 / MoBY eval_linear.py: augmented, 100 epochs (5 warmup), SGD "
    "Nesterov lr 1.0 x batch/512, batch 256, label smoothing 0.1, clip 5, backbone in train "
    "mode with drop-path 0.2",
    "mocov3": "MoCo v3 main_lincls.py: augmented, 90 epochs, SGD lr 3 x batch/256 with a "
    "per-epoch cosine, batch 1024, head N(0, 0.01), backbone in eval mode",
}

#: kNN neighbours and temperature of SynCo v2 (synco-v2 eval_knn.py:43-44, README.md:133-139).
KNN_KS: tuple[int, ...] = (10, 20, 100, 200)
KNN_TEMPERATURE = 0.07


def for_arch(settings: LinearProbeSettings, arch: str) -> LinearProbeSettings:
    """``settings`` with ``head_init="backbone"`` made concrete for ``arch``: the head the
    official backbone's constructor builds (xavier uniform for MoCo v3's ViT, truncated normal
    with std 0.02 for timm's); other settings are returned unchanged."""
    if settings.head_init != "backbone":
        return settings
    from ..models import MOCOV3_ARCHS

    head_init: HeadInit = "xavier" if arch in MOCOV3_ARCHS else "trunc-normal"
    return dataclasses.replace(settings, head_init=head_init)
