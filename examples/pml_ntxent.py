"""syn2co's synthetic negatives in pytorch-metric-learning's NTXentLoss, with exactly syn2co's loss.

pytorch-metric-learning (PML) computes NT-Xent from embeddings, ``loss_fn(embeddings, labels,
indices_tuple, ref_emb, ref_labels)``. Handing it the synthetic negatives as labelled reference
embeddings (``ref_emb=..., ref_labels=...``) makes every query meet *all* B x M synthetic
negatives of the batch, and the other queries' keys too: a different loss from
:func:`syn2co.losses.info_nce`, where query i meets its positive, the queue and its *own* M
synthetic negatives. The exact way is an ``indices_tuple`` of pairs (anchor, positive, anchor,
negative) that lists, for each query, exactly those rows of ``ref_emb``; PML's NT-Xent over
those pairs is then syn2co's InfoNCE, value and gradient (this script checks it on its first
batch and prints both).

A MoCo v2 loop (a CIFAR-sized ResNet-18, a momentum encoder, a queue of keys) whose loss is
PML's; :func:`syn2co.negatives.synthesize` makes the synthetic negatives as vectors, since PML
takes embeddings::

    pip install -e ".[train,examples]"     # from a clone: pytorch-metric-learning, torchvision
    python examples/pml_ntxent.py --data DIR --epochs 100

PML's NT-Xent compares every anchor with every listed pair through a (B, B x (K + M)) mask, so
its memory grows with B^2 (K + M); keep B and the queue moderate, or use syn2co's own loss with
:func:`syn2co.negatives.synthetic_logits` for large ones. ``DIR`` is an image folder,
``DIR/<class>/<image>``.
"""

from __future__ import annotations

import argparse
import copy
import math

import torch
from pytorch_metric_learning.losses import NTXentLoss
from torch import Tensor, nn
from torchvision import datasets, models, transforms

from syn2co.losses import info_nce
from syn2co.negatives import SYNCO_V2, similarity, synthesize
from syn2co.queue import NegativeQueue


def pml_info_nce(
    loss_fn: NTXentLoss, query: Tensor, key: Tensor, bank: Tensor, extra: Tensor
) -> Tensor:
    """syn2co's ``info_nce(query, key, bank, extra_negatives=extra)`` computed by PML.

    ``ref_emb`` stacks the keys (B), the bank (K) and every query's synthetic negatives
    (B x M); the pairs give query i its key (row i) as the positive, and as negatives the K bank
    rows and its own M synthetic rows only.
    """
    b, k, m = query.shape[0], bank.shape[0], extra.shape[1]
    device = query.device
    ref = torch.cat([key, bank, extra.flatten(0, 1)])  # (B + K + B*M, D)
    rows = torch.arange(b, device=device)
    anchors = torch.cat([rows.repeat_interleave(k), rows.repeat_interleave(m)])
    negatives = torch.cat(
        [b + torch.arange(k, device=device).repeat(b), b + k + torch.arange(b * m, device=device)]
    )
    return loss_fn(query, indices_tuple=(rows, rows, anchors, negatives), ref_emb=ref)


def labelled_route(
    loss_fn: NTXentLoss, query: Tensor, key: Tensor, bank: Tensor, extra: Tensor
) -> Tensor:
    """The other route: labels make every query meet all B*M synthetic negatives (and the other
    queries' keys). A different loss, printed for comparison only."""
    b, k, m = query.shape[0], bank.shape[0], extra.shape[1]
    labels = torch.arange(b, device=query.device)
    ref_labels = torch.cat([labels, labels.new_full((k + b * m,), -1)])
    ref = torch.cat([key, bank, extra.flatten(0, 1)])
    return loss_fn(query, labels, ref_emb=ref, ref_labels=ref_labels)


def resnet18_cifar(dim: int) -> nn.Module:
    """ResNet-18 for 32-px images (3x3 stem, no max-pooling) with MoCo v2's projection head."""
    net = models.resnet18()
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(inplace=True), nn.Linear(2048, dim))
    return net


class TwoViews:
    """Two independently augmented views of one image (MoCo v2's augmentation, small images)."""

    def __init__(self, size: int) -> None:
        self.augment = transforms.Compose(
            [
                transforms.RandomResizedCrop(size, scale=(0.2, 1.0)),
                transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                transforms.RandomGrayscale(p=0.2),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
            ]
        )

    def __call__(self, image: object) -> tuple[Tensor, Tensor]:
        return self.augment(image), self.augment(image)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="image folder, DIR/<class>/<image>")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--steps", type=int, help="stop after this many steps (default: all epochs)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--queue-size", type=int, default=1024)
    p.add_argument("--temperature", type=float, default=0.2)
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
        drop_last=True,
        num_workers=args.workers,
    )
    if len(loader) == 0:
        raise SystemExit(f"--data: {len(dataset)} images, fewer than one batch")
    total = args.steps or args.epochs * len(loader)

    encoder_q = resnet18_cifar(128).to(device)
    encoder_k = copy.deepcopy(encoder_q).requires_grad_(False)
    queue = NegativeQueue(
        args.queue_size, 128, device=device, generator=torch.Generator().manual_seed(args.seed)
    )
    spec = SYNCO_V2.replace(n_hard=min(256, args.queue_size))
    gen = torch.Generator(device=device).manual_seed(args.seed)
    loss_fn = NTXentLoss(temperature=args.temperature)
    optimizer = torch.optim.SGD(encoder_q.parameters(), lr=0.03, momentum=0.9, weight_decay=5e-4)
    print(
        f"{len(dataset)} images, {total} steps of batch {args.batch_size}, "
        f"synthetic negatives per query: {spec.total}"
    )

    step = 0
    while step < total:
        for (x1, x2), _ in loader:
            if step == total:
                break
            q = encoder_q(x1.to(device))
            with torch.no_grad():
                k = encoder_k(x2.to(device))
            bank = queue.bank
            sim = similarity(q, bank)
            extra = synthesize(q, bank, spec, similarity=sim.detach(), generator=gen)
            loss = pml_info_nce(loss_fn, q, k, bank, extra)
            if step == 0:  # the same loss and gradient as syn2co's info_nce
                ours = info_nce(q, k, bank, extra_negatives=extra, temperature=args.temperature)
                (g_pml,) = torch.autograd.grad(loss, q, retain_graph=True)
                (g_ours,) = torch.autograd.grad(ours, q, retain_graph=True)
                other = labelled_route(loss_fn, q, k, bank, extra)
                print(
                    f"step 1: PML NT-Xent over the pairs {loss.item():.6f}, syn2co info_nce "
                    f"{ours.item():.6f}: loss differs by {abs(loss.item() - ours.item()):.1e}, "
                    f"gradient by at most {(g_pml - g_ours).abs().max().item():.1e}; "
                    f"with labels instead: {other.item():.6f}"
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # momentum encoder, MoCo's m = 0.999
                for pk, pq in zip(encoder_k.parameters(), encoder_q.parameters(), strict=True):
                    pk.mul_(0.999).add_(pq.detach(), alpha=0.001)
            queue.enqueue(k)  # after the loss: a batch never sees its own keys
            step += 1
            if step % 50 == 0 or step == total:
                value = loss.item()
                if not math.isfinite(value):
                    raise SystemExit(f"step {step}: the loss is {value}")
                print(f"step {step}/{total} loss {value:.4f}", flush=True)


if __name__ == "__main__":
    main()
