"""Regenerate the figures of the documentation from the real syn2co functions.

    python scripts/make_figures.py              # writes docs/img/*.png
    python scripts/make_figures.py --out-dir X  # somewhere else

Figures (all deterministic: fixed torch generators, no timestamps in the PNG metadata):

* ``strategies.png``: the geometry of the six strategies on the unit circle (D = 2): a query,
  a small bank, its hard pool, and samples of each strategy.
* ``strategies_sphere.png``: the same on the unit sphere (D = 3), drawn in 3-D.
* ``hardness.png``: histograms of the cosine to the query of each strategy's samples against
  the hard pool's, at D = 256 with the SynCo v2 coefficients.

Needs matplotlib (``pip install "syn2co[train]"`` brings it).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from syn2co.negatives import (
    SYNCO_V1,
    SYNCO_V2,
    add_noise,
    adversarial,
    extrapolate,
    hardest,
    interpolate,
    mixup,
    perturb,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "img"

# PNG metadata without the matplotlib version, so that a regenerated file only changes when
# the picture does.
PNG_METADATA = {"Software": None}

COLORS = {
    "query": "#1f4e9c",
    "bank": "#b0b0b0",
    "hard": "#222222",
    "pool": "#7f7f7f",
    1: "#d62728",
    2: "#ff7f0e",
    3: "#2ca02c",
    4: "#9467bd",
    5: "#8c564b",
    6: "#e377c2",
}

Strategy = Callable[..., torch.Tensor]


def _panels(
    sigma: float, delta: float, eta: float
) -> list[tuple[int, str, str, Strategy, dict[str, float]]]:
    """(type, name, formula, function, coefficients) of the six strategies."""
    return [
        (
            1,
            "interpolated",
            r"$\mathrm{norm}(a\,q + (1-a)\,n)$, $a\sim U(0, 0.5)$",
            interpolate,
            {},
        ),
        (2, "extrapolated", r"$\mathrm{norm}(q + b\,(n - q))$, $b\sim U(1, 1.5)$", extrapolate, {}),
        (3, "mixed", r"$\mathrm{norm}(c\,n + (1-c)\,n')$, $c\sim U(0, 1)$", mixup, {}),
        (
            4,
            "noisy",
            rf"$\mathrm{{norm}}(n + \sigma\varepsilon)$, $\sigma={sigma:g}$",
            add_noise,
            {"sigma": sigma},
        ),
        (
            5,
            "perturbed",
            rf"$\mathrm{{norm}}(n + \delta q)$, $\delta={delta:g}$",
            perturb,
            {"delta": delta},
        ),
        (
            6,
            "adversarial",
            rf"$\mathrm{{norm}}(n + \eta\,\mathrm{{sign}}(q))$, $\eta={eta:g}$",
            adversarial,
            {"eta": eta},
        ),
    ]


def _unit(v: Sequence[float]) -> torch.Tensor:
    return F.normalize(torch.tensor([list(v)], dtype=torch.float32), dim=-1)


def _save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata=PNG_METADATA)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Geometry on the circle (D = 2)
# --------------------------------------------------------------------------------------------


def _angles(degrees: Sequence[float]) -> torch.Tensor:
    rad = torch.tensor(degrees, dtype=torch.float32) * math.pi / 180.0
    return torch.stack([rad.cos(), rad.sin()], dim=-1)


def strategies_circle(path: Path, samples: int = 60) -> None:
    """One panel per strategy on the unit circle; coefficients enlarged where D = 2 needs it."""
    query = _angles([15.0])  # sign(q) = (1, 1) points elsewhere than q: type 6 shows it
    bank = _angles([70.0, 95.0, -55.0, 135.0, 180.0, 220.0, 260.0, -95.0, -150.0, 160.0])
    hard = hardest(query, bank, 3)  # (1, 3, 2): 70, -55 and 95 degrees
    panels = _panels(sigma=0.15, delta=0.3, eta=0.3)
    fig, axes = plt.subplots(2, 3, figsize=(12, 8.8))
    theta = torch.linspace(0, 2 * math.pi, 361)
    for ax, (kind, name, formula, fn, coef) in zip(axes.flat, panels, strict=True):
        gen = torch.Generator().manual_seed(kind)
        out = fn(query, hard, samples, generator=gen, **coef)[0]
        ax.plot(theta.cos(), theta.sin(), color="#dddddd", lw=1, zorder=0)
        ax.scatter(bank[:, 0], bank[:, 1], s=25, color=COLORS["bank"], label="bank", zorder=1)
        ax.scatter(
            *hard[0].T,
            s=90,
            facecolors="none",
            edgecolors=COLORS["hard"],
            lw=1.6,
            label="hard pool (N = 3)",
            zorder=3,
        )
        ax.annotate(
            "",
            xy=tuple(query[0].tolist()),
            xytext=(0, 0),
            arrowprops={"arrowstyle": "-|>", "color": COLORS["query"], "lw": 2},
        )
        ax.text(
            *(1.12 * query[0]).tolist(),
            "q",
            color=COLORS["query"],
            fontsize=13,
            ha="center",
            va="center",
            weight="bold",
        )
        if kind in (5, 6):  # deterministic: one sample per hard negative, show the step
            for n in hard[0]:
                s = fn(query, n[None, None, :], 1, **coef)[0, 0]
                ax.annotate(
                    "",
                    xy=tuple(s.tolist()),
                    xytext=tuple(n.tolist()),
                    arrowprops={"arrowstyle": "->", "color": COLORS[kind], "lw": 1.5},
                )
        if kind == 6:
            sign = F.normalize(torch.sign(query[0]), dim=0)
            ax.annotate(
                "",
                xy=tuple((0.55 * sign).tolist()),
                xytext=(0, 0),
                arrowprops={"arrowstyle": "-|>", "color": COLORS[6], "lw": 1.2, "ls": "--"},
            )
            ax.text(*(0.62 * sign).tolist(), "sign(q)", color=COLORS[6], fontsize=9)
        ax.scatter(
            out[:, 0], out[:, 1], s=22, color=COLORS[kind], alpha=0.55, label="synthetic", zorder=2
        )
        cos_hard = (hard[0] @ query[0]).mean().item()
        cos_out = (out @ query[0]).mean().item()
        ax.set_title(
            f"{kind}. {name}\n{formula}\nmean cos to q: pool {cos_hard:.2f}, "
            f"synthetic {cos_out:.2f}",
            fontsize=10,
        )
        ax.set_xlim(-1.4, 1.4)
        ax.set_ylim(-1.25, 1.25)
        ax.set_aspect("equal")
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False)
    fig.suptitle(
        "The six strategies on the unit circle (D = 2). Types 4-6 use enlarged coefficients "
        "(defaults: sigma 0.1, delta 0.01, eta 0.01) to be visible.",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    _save(fig, path)


# --------------------------------------------------------------------------------------------
# Geometry on the sphere (D = 3)
# --------------------------------------------------------------------------------------------


def strategies_sphere(path: Path, samples: int = 60) -> None:
    """The same panels on the unit sphere (D = 3), drawn in 3-D."""
    query = _unit([0.25, 0.15, 1.0])  # sign(q) = (1, 1, 1) is 48 degrees away from q
    # A hand-placed bank around q: (angle to q, azimuth around q) in degrees. The five nearest
    # form the hard pool; the others sit farther out.
    e1 = F.normalize(torch.linalg.cross(query[0], torch.tensor([0.0, 1.0, 0.0])), dim=0)
    e2 = torch.linalg.cross(query[0], e1)
    placed = [
        (50, 10),
        (62, 95),
        (58, 170),
        (66, 250),
        (55, 320),
        (95, 40),
        (100, 130),
        (90, 210),
        (105, 290),
        (120, 0),
        (125, 180),
        (80, 140),
    ]
    rad = torch.tensor(placed, dtype=torch.float32) * math.pi / 180
    polar, azim = rad[:, :1], rad[:, 1:]
    bank = polar.cos() * query + polar.sin() * (azim.cos() * e1 + azim.sin() * e2)
    hard = hardest(query, bank, 5)
    others = bank[5:]
    panels = _panels(sigma=0.15, delta=0.3, eta=0.3)
    fig = plt.figure(figsize=(12, 8.6))
    u = torch.linspace(0, 2 * math.pi, 37)
    v = torch.linspace(0, 0.62 * math.pi, 12)
    xs = torch.outer(u.cos(), v.sin())
    ys = torch.outer(u.sin(), v.sin())
    zs = torch.outer(torch.ones_like(u), v.cos())
    for i, (kind, name, formula, fn, coef) in enumerate(panels):
        ax: Any = fig.add_subplot(2, 3, i + 1, projection="3d")  # Axes3D, untyped
        g = torch.Generator().manual_seed(kind)
        out = fn(query, hard, samples, generator=g, **coef)[0]
        ax.plot_wireframe(xs, ys, zs, color="#dcdcdc", lw=0.6)
        ax.scatter(*others.T, s=16, color=COLORS["bank"], depthshade=False)
        ax.scatter(
            *hard[0].T, s=70, facecolors="none", edgecolors=COLORS["hard"], lw=1.5, depthshade=False
        )
        ax.scatter(*out.T, s=14, color=COLORS[kind], alpha=0.7, depthshade=False)
        if kind in (5, 6):  # deterministic: one sample per hard negative, show the step
            for n in hard[0]:
                step = torch.stack([n, fn(query, n[None, None, :], 1, **coef)[0, 0]])
                ax.plot(*step.T, color=COLORS[kind], lw=1.5)
        ax.quiver(
            0, 0, 0, *query[0].tolist(), color=COLORS["query"], lw=2.2, arrow_length_ratio=0.1
        )
        ax.text(*(1.12 * query[0]).tolist(), "q", color=COLORS["query"], fontsize=12, weight="bold")
        if kind == 6:
            sign = 0.6 * F.normalize(torch.sign(query[0]), dim=0)
            ax.quiver(
                0, 0, 0, *sign.tolist(), color=COLORS[6], lw=1.2, ls="--", arrow_length_ratio=0.15
            )
            ax.text(*(1.1 * sign).tolist(), "sign(q)", color=COLORS[6], fontsize=9)
        ax.view_init(elev=28, azim=-55)
        ax.set_box_aspect((1, 1, 0.75), zoom=1.25)
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.set_zlim(-0.4, 1.1)
        ax.set_axis_off()
        cos_hard = (hard[0] @ query[0]).mean().item()
        cos_out = (out @ query[0]).mean().item()
        ax.set_title(
            f"{kind}. {name}\n{formula}\nmean cos to q: pool {cos_hard:.2f}, "
            f"synthetic {cos_out:.2f}",
            fontsize=9.5,
        )
    fig.suptitle(
        "On the unit sphere (D = 3): hard pool of 5 (rings), other bank entries (grey), synthetic "
        "negatives (coloured); types 4-6 with enlarged coefficients",
        fontsize=10.5,
    )
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.02, top=0.88, wspace=0.0, hspace=0.18)
    _save(fig, path)


# --------------------------------------------------------------------------------------------
# Hardness at D = 256
# --------------------------------------------------------------------------------------------


def hardness_histograms(path: Path, dim: int = 256, batch: int = 8, bank_size: int = 4096) -> None:
    """Cosine to the query of each strategy's samples vs. the hard pool, SynCo v2 settings."""
    gen = torch.Generator().manual_seed(0)
    query = F.normalize(torch.randn(batch, dim, generator=gen), dim=-1)
    # A bank whose cosines to each query spread over [-0.2, 0.55], so that the hard pool (the top
    # 256 of 4096) sits near cos 0.5, as in the measurements quoted in the docs.
    cos = -0.2 + 0.75 * torch.rand(batch, bank_size, 1, generator=gen)
    noise = torch.randn(batch, bank_size, dim, generator=gen)
    noise = F.normalize(noise - (noise @ query[:, :, None]) * query[:, None, :], dim=-1)
    bank = cos * query[:, None, :] + (1 - cos**2).sqrt() * noise  # (B, K, D), per query
    spec = SYNCO_V2
    hard = hardest(query, bank, spec.n_hard)
    pool_cos = torch.einsum("bd,bnd->bn", query, hard).flatten()
    panels = _panels(sigma=spec.sigma, delta=spec.delta, eta=spec.eta)
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.6), sharex=True)
    bins = torch.linspace(0.0, 1.0, 101)
    for ax, (kind, name, formula, fn, coef) in zip(axes.flat, panels, strict=True):
        g = torch.Generator().manual_seed(kind)
        out = fn(query, hard, 1024, generator=g, **coef)
        cos_out = torch.einsum("bd,bmd->bm", query, out).flatten()
        ax.hist(
            pool_cos,
            bins=bins.tolist(),
            density=True,
            color=COLORS["pool"],
            alpha=0.45,
            label=f"hard pool, mean {pool_cos.mean():.3f}",
        )
        ax.hist(
            cos_out,
            bins=bins.tolist(),
            density=True,
            color=COLORS[kind],
            alpha=0.7,
            label=f"type {kind}, mean {cos_out.mean():.3f}",
        )
        if kind == 4:  # SynCo v1's sigma for comparison
            g = torch.Generator().manual_seed(kind)
            v1 = fn(query, hard, 1024, generator=g, sigma=SYNCO_V1.sigma)
            cos_v1 = torch.einsum("bd,bmd->bm", query, v1).flatten()
            ax.hist(
                cos_v1,
                bins=bins.tolist(),
                density=True,
                histtype="step",
                color="black",
                lw=1.2,
                label=f"sigma {SYNCO_V1.sigma:g} (v1), mean {cos_v1.mean():.3f}",
            )
        ax.axvline(float(pool_cos.mean()), color=COLORS["pool"], ls="--", lw=1)
        ax.axvline(float(cos_out.mean()), color=COLORS[kind], ls="--", lw=1)
        ax.set_title(f"{kind}. {name}: {formula}", fontsize=10)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.5)  # room for the legend above the pool's spike
        ax.legend(fontsize=8, loc="upper left", frameon=False)
        ax.set_yticks([])
    for ax in axes[1]:
        ax.set_xlabel("cosine to the query")
    fig.suptitle(
        f"Cosine to the query at D = {dim}: synthetic negatives vs. their hard pool "
        f"(N = {spec.n_hard} of K = {bank_size}, SynCo v2 coefficients)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    _save(fig, path)


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Write every figure; returns the paths written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    out: Path = args.out_dir
    paths = [out / "strategies.png", out / "strategies_sphere.png", out / "hardness.png"]
    strategies_circle(paths[0])
    strategies_sphere(paths[1])
    hardness_histograms(paths[2])
    for p in paths:
        print(f"wrote {p}")
    return paths


if __name__ == "__main__":
    main()
