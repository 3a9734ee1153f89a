"""SimCLR with synthetic hard negatives made from the batch itself.

SimCLR's NT-Xent (:func:`syn2co.losses.nt_xent`) treats the 2B embeddings of a batch's two views
as anchors: each anchor's positive is the other view of its image, every other embedding is a
negative. Here each anchor also meets synthetic negatives made from its hardest in-batch
negatives (SynCo v2's six strategies), with the anchor itself and its positive excluded from its
hard pool; :func:`syn2co.negatives.synthetic_logits` gives their cosines to the anchor, which
the loss takes as ``extra_similarity``. SynCo v2's pool of 256 needs 2B - 2 >= 256, a batch of
at least 129; smaller batches use all 2B - 2::

    python examples/simclr_synthetic_negatives.py --data DIR --epochs 100 --batch-size 256

``DIR`` is an image folder, ``DIR/<class>/<image>``. Needs ``torch`` and ``torchvision``
(``pip install -e ".[train]"`` from a clone brings both).
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn
from torchvision import datasets, models, transforms

from syn2co.losses import nt_xent, nt_xent_mask
from syn2co.negatives import SYNCO_V2, synthetic_logits


class TwoViews:
    """SimCLR's augmentation for small images, applied twice."""

    def __init__(self, size: int) -> None:
        self.augment = transforms.Compose(
            [
                transforms.RandomResizedCrop(size, scale=(0.08, 1.0)),
                transforms.RandomHorizontalFlip(),
                transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                transforms.RandomGrayscale(p=0.2),
                transforms.ToTensor(),
            ]
        )

    def __call__(self, image: object) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment(image), self.augment(image)


class SimCLR(nn.Module):
    """A ResNet-18 for small images and SimCLR's two-layer projection head."""

    def __init__(self, dim: int = 128) -> None:
        super().__init__()
        self.backbone = models.resnet18()
        self.backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.backbone.maxpool = nn.Identity()
        self.backbone.fc = nn.Identity()
        self.head = nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="image folder, DIR/<class>/<image>")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--steps", type=int, help="stop after this many steps (default: all epochs)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--no-negatives", action="store_true", help="plain SimCLR")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    dataset = datasets.ImageFolder(args.data, transform=TwoViews(args.img_size))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,  # every batch the same size: the mask below is built once
        num_workers=args.workers,
    )
    if len(loader) == 0:
        raise SystemExit(f"--data: {len(dataset)} images, fewer than one batch")
    total = args.steps or args.epochs * len(loader)

    model = SimCLR().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-6)
    b = args.batch_size
    # The hard pool of an anchor: its hardest in-batch negatives, at most 2B - 2 of them.
    spec = None if args.no_negatives else SYNCO_V2.replace(n_hard=min(256, 2 * b - 2))
    # Each anchor's own column and its positive's must not enter its hard pool.
    exclude = nt_xent_mask(b, device=device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    print(
        f"{len(dataset)} images, {total} steps of batch {b}, "
        f"synthetic negatives per anchor: {spec.total if spec else 0}"
    )

    step = 0
    while step < total:
        for (x1, x2), _ in loader:
            if step == total:
                break
            z1, z2 = model(x1.to(device)), model(x2.to(device))
            extra = None
            if spec is not None:
                anchors = torch.cat([z1, z2])  # (2B, D), the order nt_xent uses
                # The bank is the batch's own embeddings, as constants; (2B, M) cosines.
                extra = synthetic_logits(
                    anchors, anchors.detach(), spec, exclude=exclude, generator=gen
                )
            loss = nt_xent(z1, z2, extra_similarity=extra, temperature=args.temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % 50 == 0 or step == total:
                value = loss.item()
                if not math.isfinite(value):
                    raise SystemExit(f"step {step}: the loss is {value}")
                print(f"step {step}/{total} loss {value:.4f}", flush=True)


if __name__ == "__main__":
    main()
