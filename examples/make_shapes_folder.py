"""Write the trainer's built-in procedural shapes as an image folder, for the examples.

``OUT/train/<class>/<i>.png`` and ``OUT/val/<class>/<i>.png``: the images of
:class:`reference_trainer.data.builtin.ProceduralShapes` (10 classes of shapes and patterns,
random colours, positions and noise; the same pixels on every run), so that the examples can be
tried without a download::

    python examples/make_shapes_folder.py shapes --train 2000 --val 500
    python examples/moco_v2_cifar10.py --data shapes/train --val-data shapes/val

Needs the trainer (``pip install -e ".[train]"`` from a clone).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reference_trainer.data.builtin import ProceduralShapes


def write_split(out: Path, split: str, count: int, img_size: int) -> None:
    data = ProceduralShapes(count, img_size, split=split)
    for name in data.classes:
        (out / split / name).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, label, _ = data[i]
        image.save(out / split / data.classes[label] / f"{i:06d}.png")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--train", type=int, default=2000, help="training images")
    p.add_argument("--val", type=int, default=500, help="validation images")
    p.add_argument("--img-size", type=int, default=32)
    args = p.parse_args(argv)
    write_split(args.out, "train", args.train, args.img_size)
    write_split(args.out, "val", args.val, args.img_size)
    print(f"wrote {args.train} + {args.val} images of 10 classes to {args.out}/train, /val")


if __name__ == "__main__":
    main()
