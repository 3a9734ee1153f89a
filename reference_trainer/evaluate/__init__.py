"""Evaluation of a frozen backbone: the weighted kNN monitor and the linear probe.

Both evaluations treat the backbone as a fixed feature extractor: it runs under
``torch.no_grad`` (in eval mode, unless a linear probe asks for dropout and drop-path while it
trains) and is never updated. The linear probe proves it: it hashes every parameter and buffer
of the backbone before and after (:func:`fingerprint`) and raises if anything changed.

* :mod:`~reference_trainer.evaluate.features`: :func:`extract_features` turns a loader into a
  ``(N, D)`` feature matrix and ``(N,)`` labels.
* :mod:`~reference_trainer.evaluate.knn`: :func:`knn_predict` / :func:`knn_classify` /
  :func:`knn_accuracy` / :func:`knn_evaluate` are the weighted kNN classifier of InstDisc, MoCo
  and DINO on precomputed features; :func:`knn_probe` runs it from a backbone and two loaders;
  :class:`KnnSettings` is a kNN protocol and :func:`knn_shards` the images one rank of a
  multi-GPU evaluation reads.
* :mod:`~reference_trainer.evaluate.linear`: :func:`linear_probe` trains a linear classifier on
  the frozen backbone with the hyperparameters of a :class:`LinearProbeSettings`.
* :mod:`~reference_trainer.evaluate.protocols`: the published probes and kNN protocols by
  name, each value with its source.

Long passes report their progress through an optional ``progress(stage, done, total)``
callback (:data:`Progress`), called after every batch.

Loaders may be any iterable of batches where either ``batch[0]`` holds the images ``(B, C, H, W)``
and ``batch[1]`` the labels ``(B,)``, or the batch has ``images`` and ``labels`` attributes (the
trainer's evaluation batches). The backbone must already live on ``device`` and return pooled
features ``(B, D)`` (timm models created with ``num_classes=0``).

Every result is a dataclass with ``to_dict()`` giving plain JSON-serializable values.
"""

from __future__ import annotations

from ._fingerprint import fingerprint
from .features import Progress, extract_features
from .knn import (
    KnnResult,
    KnnSettings,
    knn_accuracy,
    knn_classify,
    knn_evaluate,
    knn_predict,
    knn_probe,
    knn_shards,
)
from .linear import LinearProbeResult, LinearProbeSettings, ProbeStep, linear_probe

__all__ = [
    "KnnResult",
    "KnnSettings",
    "LinearProbeResult",
    "LinearProbeSettings",
    "ProbeStep",
    "Progress",
    "extract_features",
    "fingerprint",
    "knn_accuracy",
    "knn_classify",
    "knn_evaluate",
    "knn_predict",
    "knn_probe",
    "knn_shards",
    "linear_probe",
]
