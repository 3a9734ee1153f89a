"""MoCo v2 with SynCo's synthetic hard negatives on CIFAR-10, read from an image folder.

A complete, plain PyTorch loop: a CIFAR-sized ResNet-18, a momentum encoder, MoCo v2's
augmentation, a queue of 4,096 keys (:class:`syn2co.queue.NegativeQueue`) and, on top of the
queue, SynCo v1's 960 synthetic negatives per query in the InfoNCE loss, as their logits
(:func:`syn2co.negatives.synthetic_logits` with ``SYNCO_V1``: the cosines, never the vectors).
The queue is updated after ``backward()``, whose pass reads it. After training it reports the
weighted kNN accuracy on a validation folder, if one is given.

The data is any image folder, ``DIR/<class>/<image>``; CIFAR-10 as JPEG or PNG files in that
layout works as it is::

    python examples/moco_v2_cifar10.py --data cifar10/train --val-data cifar10/test \\
        --epochs 200 --batch-size 256 --out moco_v2_synco.pt

Needs ``torch`` and ``torchvision`` (``pip install -e ".[train]"`` from a clone brings both).
"""

from __future__ import annotations

import argparse
import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import datasets, models, transforms

from syn2co import value_checks
from syn2co.losses import info_nce
from syn2co.negatives import SYNCO_V1, similarity, synthetic_logits
from syn2co.queue import NegativeQueue
from syn2co.schedules import ActiveWindow, cosine_schedule

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class TwoViews:
    """Two independently augmented views of one image (MoCo v2's augmentation, at 32 px)."""

    def __init__(self, size: int) -> None:
        self.augment = transforms.Compose(
            [
                transforms.RandomResizedCrop(size, scale=(0.2, 1.0)),
                transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                transforms.RandomGrayscale(p=0.2),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
            ]
        )

    def __call__(self, image: object) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment(image), self.augment(image)


def resnet18_cifar() -> nn.Module:
    """ResNet-18 for 32-px images: a 3x3 stem without max-pooling, 512-d features."""
    net = models.resnet18(num_classes=10)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


class Encoder(nn.Module):
    """Backbone and MoCo v2's projection head (512 -> 2048 -> 128)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.backbone = resnet18_cifar()
        self.head = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(inplace=True), nn.Linear(2048, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@torch.no_grad()
def knn_top1(
    backbone: nn.Module, train_dir: str, val_dir: str, device: torch.device, k: int = 20
) -> float:
    """Weighted kNN top-1 (%): cosine similarity, votes weighted by exp(sim / 0.07)."""
    plain = transforms.Compose([transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])

    def features(folder: str) -> tuple[torch.Tensor, torch.Tensor, int]:
        data = datasets.ImageFolder(folder, transform=plain)
        loader = torch.utils.data.DataLoader(data, batch_size=256)
        feats = [(F.normalize(backbone(x.to(device)), dim=1), y) for x, y in loader]
        return (
            torch.cat([f for f, _ in feats]),
            torch.cat([y for _, y in feats]).to(device),
            len(data.classes),
        )

    backbone.eval()
    train_f, train_y, n_classes = features(train_dir)
    val_f, val_y, _ = features(val_dir)
    sim, idx = (val_f @ train_f.T).topk(min(k, train_f.shape[0]), dim=1)
    votes = torch.zeros(val_f.shape[0], n_classes, device=device)
    votes.scatter_add_(1, train_y[idx], (sim / 0.07).exp())
    return 100.0 * (votes.argmax(dim=1) == val_y).float().mean().item()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="training image folder, DIR/<class>/<image>")
    p.add_argument("--val-data", help="validation image folder for the final kNN accuracy")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--steps", type=int, help="stop after this many steps (default: all epochs)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.06, help="at batch 256; scaled linearly")
    p.add_argument("--queue-size", type=int, default=4096)
    p.add_argument(
        "--negatives-from",
        type=int,
        default=0,
        help="first step with synthetic negatives (SynCo v1: epoch 10)",
    )
    p.add_argument("--no-negatives", action="store_true", help="plain MoCo v2")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="save the trained backbone's state_dict here")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    train_set = datasets.ImageFolder(args.data, transform=TwoViews(32))
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise SystemExit(
            f"--data: {len(train_set)} images, fewer than one batch of {args.batch_size}"
        )
    total = args.steps or args.epochs * steps_per_epoch

    encoder_q = Encoder(128).to(device)
    encoder_k = copy.deepcopy(encoder_q).requires_grad_(False)
    queue = NegativeQueue(
        args.queue_size, 128, device=device, generator=torch.Generator().manual_seed(args.seed)
    )
    spec = None if args.no_negatives else SYNCO_V1.replace(n_hard=min(1024, args.queue_size))
    window = ActiveWindow(start=args.negatives_from)
    gen = torch.Generator(device=device).manual_seed(args.seed)  # the synthetic negatives' draws
    base_lr = args.lr * args.batch_size / 256
    optimizer = torch.optim.SGD(encoder_q.parameters(), lr=base_lr, momentum=0.9, weight_decay=5e-4)
    print(
        f"{len(train_set)} images, {total} steps of batch {args.batch_size}, "
        f"synthetic negatives per query: {spec.total if spec else 0}"
    )

    step = 0
    while step < total:
        for (x1, x2), _ in loader:
            if step == total:
                break
            x1, x2 = x1.to(device, non_blocking=True), x2.to(device, non_blocking=True)
            lr = cosine_schedule(step, total, base_lr, 0.0)
            for group in optimizer.param_groups:
                group["lr"] = lr
            q = encoder_q(x1)
            with torch.no_grad():
                k = encoder_k(x2)
            # syn2co's NaN/inf scans would synchronise with the GPU at every call: off here,
            # the loss is checked every 50 steps below instead.
            with value_checks(False):
                # One product with the queue, shared by the hard pool and the loss.
                sim = similarity(q, queue.bank)
                extra = None
                if spec is not None and window.active(step):  # (B, 960) cosines
                    extra = synthetic_logits(
                        q, queue.bank, spec, similarity=sim.detach(), generator=gen
                    )
                loss = info_nce(
                    q, k, negative_similarity=sim, extra_similarity=extra, temperature=0.2
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # momentum encoder, MoCo's m = 0.999
                for pk, pq in zip(encoder_k.parameters(), encoder_q.parameters(), strict=True):
                    pk.mul_(0.999).add_(pq.detach(), alpha=0.001)
            queue.enqueue(k)  # after backward, which reads the queue; never its own keys
            step += 1
            if step % 50 == 0 or step == total:
                value = loss.item()
                if not math.isfinite(value):
                    raise SystemExit(f"step {step}: the loss is {value}; lower --lr")
                print(f"step {step}/{total} loss {value:.4f} lr {lr:.4g}", flush=True)

    if args.out:
        torch.save(encoder_q.backbone.state_dict(), args.out)
        print(f"backbone saved to {args.out}")
    if args.val_data:
        acc = knn_top1(encoder_q.backbone, args.data, args.val_data, device)
        print(f"kNN top-1 (k=20): {acc:.1f} %")


if __name__ == "__main__":
    main()
