"""The evaluation protocols: linear probes as SynCo v2, MoCo v3 and MoCo v2 (SynCo v1) run
them, a fast probe, and kNN over the whole split or as SynCo v2 ran it.

A linear protocol is a named :class:`~reference_trainer.evaluate.LinearProbeSettings` preset,
a kNN protocol a named :class:`~reference_trainer.evaluate.KnnSettings` preset.
``syn2co-train eval linear --protocol NAME`` takes every probe setting from one of
:data:`LINEAR_PROTOCOLS` (default :data:`FAST`), ``eval knn --protocol NAME`` from one of
:data:`KNN_PROTOCOLS` (default :data:`FULL_KNN`); options given on the command line override
single values. Sources: "synco-v2" is github.com/giakoumoglou/synco-v2 at commit
61528c54c53e6bb7a1fa722059f70bd382eae454, "moco-v3" is github.com/facebookresearch/moco-v3 at
commit c349e6e24f40d3fedb22d973f92defa4cedf37a7, "moco" is github.com/facebookresearch/moco at
commit 7397dfe146c7ca6bbb58e9c382498069178ba764 (its ``main_lincls.py``, which SynCo v1
runs: github.com/giakoumoglou/synco at commit
79a9c42f743fdc661f06f2dc7613ef04442d9780, ``scripts/lineval_synco_r50_200ep.sh``
sets ``--lr 30.0 --batch-size 256``).

Every official probe resizes with torchvision's default, bilinear interpolation (synco-v2
src/data/transform.py:155,162; moco-v3 main_lincls.py:273,290; moco main_lincls.py:344,371):
those protocols carry ``interpolation="bilinear"``; ``fast`` and ``full`` keep the trainer's
bicubic evaluation transform.

Known differences from the official scripts: SynCo v2's probe uses timm's cosine scheduler, whose
cosine runs over the whole run with the warmup laid over its start, while here the cosine starts
after the warmup (:func:`syn2co.schedules.cosine_schedule`; at 5 warmup epochs of 100 the two
differ by at most 4.7% of the peak rate); the probes run on one process (the official ones
shard the same global batch over GPUs); SynCo v2's ``model.train()`` also puts a ResNet's
BatchNorm in train mode, so its running statistics move during the official probe, while here
they stay fixed (a probe must not change the backbone); the official rates are fixed numbers
at their batch, here they scale with ``--batch-size`` (the same at the official batch); the
validation resize is to ``S + 32`` (synco-v2) or 256 (moco, moco-v3) in the official code and
``round(S / 0.875)`` above 96 px here (``S`` below): the same at 224 px, the only size the
official scripts ran.
"""

from __future__ import annotations

import dataclasses

from ._classifier import HeadInit
from .knn import KnnSettings
from .linear import LinearProbeSettings

__all__ = [
    "FAST",
    "FULL_KNN",
    "KNN_KS",
    "KNN_PROTOCOLS",
    "KNN_PROTOCOL_SUMMARIES",
    "KNN_TEMPERATURE",
    "LINEAR_PROTOCOLS",
    "MOCOV2",
    "MOCOV3",
    "PROTOCOL_SUMMARIES",
    "SYNCO_V2",
    "SYNCO_V2_KNN",
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
    interpolation="bilinear",  # synco-v2 src/data/transform.py:155,162 (torchvision default)
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
    interpolation="bilinear",  # moco-v3 main_lincls.py:273,290 (torchvision default)
)
"""MoCo v3 ``main_lincls.py``."""

MOCOV2 = LinearProbeSettings(
    mode="augmented",  # moco main_lincls.py:344-345 (RandomResizedCrop 224 + flip)
    epochs=100,  # moco main_lincls.py:55; synco main_lincls.py:39
    batch_size=256,  # moco main_lincls.py:66-67; synco scripts/lineval_synco_r50_200ep.sh:15
    base_lr=30.0,  # moco main_lincls.py:77; synco scripts/lineval_synco_r50_200ep.sh:14
    lr_reference_batch=256,  # the official rate is not scaled: 30 at its batch of 256
    schedule="multistep",  # moco main_lincls.py:593-597; synco main_lincls.py:478-482
    lr_milestones=(60, 80),  # moco main_lincls.py:84-85; synco main_lincls.py:43
    lr_decay=0.1,  # moco main_lincls.py:597; synco main_lincls.py:482
    momentum=0.9,  # moco main_lincls.py:90; synco main_lincls.py:44
    nesterov=False,  # moco main_lincls.py:302-303 (torch.optim.SGD's default)
    weight_decay=0.0,  # moco main_lincls.py:92-94; synco main_lincls.py:45
    batchnorm=False,  # moco main_lincls.py:229-237 (the ResNet's own fc alone)
    backbone_mode="eval",  # moco main_lincls.py:439; synco main_lincls.py:334
    head_init="normal",  # moco main_lincls.py:236-237; synco main_lincls.py:141-142
    interpolation="bilinear",  # moco main_lincls.py:344,371 (torchvision default)
)
"""MoCo v2 ``main_lincls.py``, SynCo v1's linear evaluation."""

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
    "mocov2": MOCOV2,
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
    "mocov2": "MoCo v2 main_lincls.py (SynCo v1's): augmented, 100 epochs, SGD lr 30 x "
    "batch/256, x0.1 at epochs 60 and 80, batch 256, head N(0, 0.01), backbone in eval mode",
}

#: kNN neighbours and temperature of SynCo v2 (synco-v2 eval_knn.py:43-44, README.md:133-134).
KNN_KS: tuple[int, ...] = (10, 20, 100, 200)
KNN_TEMPERATURE = 0.07

FULL_KNN = KnnSettings(ks=KNN_KS, temperature=KNN_TEMPERATURE)
"""The default of ``eval knn``: every training image through the evaluation transform (bicubic
resize, center crop) against every validation image, in one process. Not what SynCo v2's
numbers measured (:data:`SYNCO_V2_KNN`)."""

SYNCO_V2_KNN = KnnSettings(
    ks=KNN_KS,  # synco-v2 eval_knn.py:43, README.md:133
    temperature=KNN_TEMPERATURE,  # synco-v2 eval_knn.py:44, src/utils/knn_utils.py:146
    train_transform="augmented",  # synco-v2 eval_knn.py:61-62, src/data/transform.py:153-159
    interpolation="bilinear",  # synco-v2 src/data/transform.py:155,162 (torchvision default)
    shards=8,  # synco-v2 README.md:127 (--nproc_per_node=8), src/data/builder.py:55-66
    drop_last=True,  # synco-v2 src/data/builder.py:69-76
    batch_size=64,  # synco-v2 src/utils/config.py:22 (per GPU; the kNN command sets none)
    shard_seed=0,  # synco-v2 src/data/builder.py:58-63 (DistributedSampler's seed, epoch 0)
)
"""SynCo v2's ``eval_knn.py`` as its README ran it (8 GPUs), simulated in one process: rank 0's
training shard of a ``DistributedSampler`` (shuffled with seed 0 at epoch 0, padded to a
multiple of 8, every 8th index), random resized crops and flips, cut to whole batches of 64;
against every 8th validation image from the first; no gather between ranks. Rank 0's number
is the one the script logs."""

#: The kNN protocols by name; ``eval knn`` uses ``full`` unless ``--protocol`` says otherwise.
KNN_PROTOCOLS: dict[str, KnnSettings] = {"full": FULL_KNN, "synco-v2": SYNCO_V2_KNN}

#: One line per kNN protocol, for ``--help`` and the docs.
KNN_PROTOCOL_SUMMARIES: dict[str, str] = {
    "full": "the whole train split through the evaluation transform against the whole val "
    "split (bicubic resize, center crop)",
    "synco-v2": "SynCo v2 eval_knn.py on 8 GPUs, rank 0's share: a DistributedSampler shard of "
    "the train split through random resized crops and flips, cut to whole batches of 64, "
    "against every 8th val image (bilinear resize)",
}


def for_arch(settings: LinearProbeSettings, arch: str) -> LinearProbeSettings:
    """``settings`` with ``head_init="backbone"`` made concrete for ``arch``: the head the
    official backbone's constructor builds (xavier uniform for MoCo v3's ViT, truncated normal
    with std 0.02 for timm's); other settings are returned unchanged."""
    if settings.head_init != "backbone":
        return settings
    from ..models import MOCOV3_ARCHS

    head_init: HeadInit = "xavier" if arch in MOCOV3_ARCHS else "trunc-normal"
    return dataclasses.replace(settings, head_init=head_init)
