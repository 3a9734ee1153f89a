"""mkdocs hook: the reference of the trainer's logged metrics is generated from the code.

A page holding the marker below gets the tables of every key that ``syn2co-train run`` writes
to ``RUN/metrics.jsonl`` (and TensorBoard): the keys of each step's line
(``reference_trainer.reporting.records``), the hardness statistics (the names
``syn2co.diagnostics.hardness_stats`` returns, for every registered strategy and every
``reference_trainer.diagnostics.Source``) and the learned generators' metrics
(``reference_trainer.learned_generators``). The descriptions live here, beside the code that
expands them; ``tests/test_metrics_reference.py`` fails when the code writes a key that has no
description here, or a description names a key the code no longer writes.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- syn2co-train metrics -->"

#: The keys of every step's line, as ``reporting.records`` writes them: (type, description).
STEP_KEYS: dict[str, tuple[str, str]] = {
    "step": ("int", "The optimizer step (1 for the first), counted over the whole run."),
    "epoch": ("int", "The data sampler's epoch after the step."),
    "loss": (
        "float",
        "The step's loss on the global batch: the mean over ranks of each rank's mean (MoBY: the "
        "sum of its two directions).",
    ),
    "lr": ("float", "The learning rate of the step (after warmup and cosine schedule)."),
    "momentum": (
        "float",
        "The EMA momentum of the target network at the step: the method's schedule (a cosine "
        "from --momentum to 1, constant for MoCo v2). SimCLR, which has no target network, logs "
        "its preset's schedule all the same.",
    ),
    "synthetic_negatives": (
        "bool",
        "Whether synthetic negatives entered this step's loss: a preset or counts were given and "
        "the step lies in their window (--negatives-start, --negatives-end and their epoch "
        "forms).",
    ),
    "img_per_s": (
        "float",
        "Image pairs per second of the global batch, measured between two flushes (every "
        "--log-every steps), so every line of one flush shows the same value.",
    ),
    "real": (
        "int",
        "Real images in the global batch; only when the run mixes sources (--synthetic-data, "
        "or learned generators).",
    ),
    "synthetic": (
        "int",
        "Images of --synthetic-data in the global batch; only when the run mixes sources.",
    ),
}

#: What each statistic of ``hardness_stats`` means, by its name without the group prefix.
#: ``<type>`` stands for each registered strategy (``syn2co.negatives.strategies()``).
HARDNESS_STATS: dict[str, str] = {
    "positive/mean": "Mean cosine of each query with its positive.",
    "positive/max": "Largest cosine of a query with its positive.",
    "bank/mean": "Mean cosine of the queries with every bank entry (queue or in-batch keys).",
    "hard_real/mean": "Mean cosine of the queries with their hard pool (their N most similar "
    "bank entries, N = the spec's pool, at most the bank less the excluded entries).",
    "hard_real/max": "Largest cosine of a query with a member of its hard pool.",
    "hard_real/above_positive": "Fraction of hard-pool members more similar to their query than "
    "its positive (high values hint at false negatives or collapse).",
    "<type>/mean": "Mean cosine of the queries with their synthetic negatives of this type.",
    "<type>/max": "Largest cosine of a query with one of its synthetic negatives of this type.",
    "<type>/above_positive": "Fraction of this type's synthetic negatives more similar to their "
    "query than its positive.",
}

#: The groups of hardness statistics (``reference_trainer.diagnostics.hardness``), ``<source>``
#: standing for each ``Source`` (real, synthetic, generated) in lower case.
HARDNESS_GROUPS: dict[str, str] = {
    "hardness/": "The step's first loss direction, every query of the main rank's batch.",
    "hardness/<source>_queries/": "The same, for the queries that are images of this source "
    "only; when the run mixes sources.",
    "hardness/<source>_negatives/": "The real-negative statistics (bank and hard pool, no "
    "positive and no synthetic types) restricted to bank entries from images of this source; "
    "when the run mixes sources and its queue keeps each entry's source (MoBY, MoCo v2).",
}

#: The learned generators' metrics (``--generator``), logged with the hardness statistics.
GENERATOR_KEYS: dict[str, tuple[str, str]] = {
    "gen/sample_loss": (
        "float",
        "The hard-sample generator's objective at its step (its contrastive term plus fidelity; "
        "--generator hard-samples or both).",
    ),
    "gen/sample_contrastive": (
        "float",
        "The encoder's in-batch InfoNCE on two views of the generated samples: how hard they are "
        "for it (the generator raises it).",
    ),
    "gen/sample_fidelity": (
        "float",
        "Distance of the generated samples' embedding and pixel statistics from the real "
        "batch's (lower: closer to real images).",
    ),
    "gen/pair_loss": (
        "float",
        "The pair generator's objective at its step (--generator hard-pairs or both).",
    ),
    "gen/pair_similarity": (
        "float",
        "Mean cosine between the encoder's embeddings of the two images of each generated pair.",
    ),
    "gen/pair_target": (
        "float",
        "The similarity the pair generator aims at this step (its schedule, 0.9 falling to 0.5 "
        "by default).",
    ),
    "gen/pair_spread": ("float", "The pair codes' spread s: how far apart the two codes are."),
    "gen/pair_fidelity": (
        "float",
        "Distance of the pairs' embedding and pixel statistics from the real batch's.",
    ),
}


def strategy_names() -> list[str]:
    from syn2co.negatives import strategies

    return [s.name for s in strategies()]


def source_names() -> list[str]:
    from reference_trainer.diagnostics import Source

    return [s.name.lower() for s in Source]


def hardness_stat_names() -> list[str]:
    """The names ``hardness_stats`` returns with a bank and every registered strategy."""
    import torch

    from syn2co.diagnostics import hardness_stats
    from syn2co.negatives import NegativeSpec

    names = strategy_names()
    spec = NegativeSpec(n_hard=2, counts=dict.fromkeys(names, 1))
    q, bank = torch.randn(2, 4), torch.randn(3, 4)
    stats = hardness_stats(q, q, bank, synthetic_similarity=torch.zeros(2, len(names)), spec=spec)
    return list(stats)


def _generic(stat: str, types: list[str]) -> str:
    head = stat.split("/", 1)[0]
    return stat.replace(head, "<type>", 1) if head in types else stat


def hardness_keys() -> dict[str, str]:
    """Every hardness key the trainer can log, with its description."""
    types, out = strategy_names(), {}
    for stat in hardness_stat_names():
        text = HARDNESS_STATS[_generic(stat, types)]
        for group in HARDNESS_GROUPS:
            if group.endswith("_negatives/") and (
                stat.startswith("positive/") or _generic(stat, types) != stat
            ):
                continue
            for source in source_names() if "<source>" in group else [""]:
                out[group.replace("<source>", source) + stat] = text
    return out


def documented_keys() -> set[str]:
    """Every concrete key of the reference (each type and source spelled out)."""
    return set(STEP_KEYS) | set(GENERATOR_KEYS) | set(hardness_keys())


def render() -> str:
    """The Markdown tables of the reference."""
    types, sources = strategy_names(), source_names()
    lines = ["### Every step", "", "| key | type | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | {kind} | {text} |" for key, (kind, text) in STEP_KEYS.items()]
    lines += [
        "",
        "### Hardness",
        "",
        "Floats, every `--hardness-every` steps and at step 1. Each group below holds the "
        "statistics of the second table; `<type>` is one of "
        + ", ".join(f"`{t}`" for t in types)
        + " (each synthetic type with a non-zero count, while the synthetic negatives are "
        "active), `<source>` one of " + ", ".join(f"`{s}`" for s in sources) + ".",
        "",
        "| group (key prefix) | what it covers |",
        "|---|---|",
    ]
    lines += [f"| `{group}` | {text} |" for group, text in HARDNESS_GROUPS.items()]
    seen: set[str] = set()
    lines += ["", "| statistic (after the prefix) | meaning |", "|---|---|"]
    for stat in hardness_stat_names():
        generic = _generic(stat, types)
        if generic not in seen:
            seen.add(generic)
            lines.append(f"| `{generic}` | {HARDNESS_STATS[generic]} |")
    lines += [
        "",
        "### Learned generators",
        "",
        "Floats, with `--generator`, at the same steps as the hardness statistics.",
        "",
        "| key | type | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{key}` | {kind} | {text} |" for key, (kind, text) in GENERATOR_KEYS.items()]
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())
