"""Plot the kNN accuracies of a ``learning_sweep.py`` run: one column per configuration, one dot
per seed (pretrained, filled; random init, hollow), the mean as a bar.

Usage::

    python benchmarks/plot_sweep.py sweep.jsonl docs/img/generators_study.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("results", type=Path, help="JSON lines written by learning_sweep.py --out")
    p.add_argument("png", type=Path)
    p.add_argument("--title", default="kNN top-1 after pretraining (k=20, validation split)")
    args = p.parse_args()
    pretrained: dict[str, list[float]] = defaultdict(list)
    random_init: dict[str, list[float]] = defaultdict(list)
    for line in args.results.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            pretrained[r["name"]].append(r["knn_pretrained"])
            random_init[r["name"]].append(r["knn_random"])
    names = list(pretrained)
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 4))
    for x, name in enumerate(names):
        accs = pretrained[name]
        ax.bar(x, sum(accs) / len(accs), color="tab:blue", alpha=0.35, width=0.6)
        ax.scatter([x] * len(accs), accs, color="tab:blue", zorder=3, label=None)
        ax.scatter(
            [x] * len(random_init[name]),
            random_init[name],
            facecolors="none",
            edgecolors="gray",
            zorder=3,
        )
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_ylabel("top-1 (%)")
    lows = [min(v) for v in random_init.values()]
    ax.set_ylim(min(lows) - 2, max(max(v) for v in pretrained.values()) + 3)
    ax.set_title(args.title)
    ax.scatter([], [], color="tab:blue", label="pretrained, one dot per seed (bar: mean)")
    ax.scatter([], [], facecolors="none", edgecolors="gray", label="random init")
    ax.legend(loc="upper center", ncol=2, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=100)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
