"""syn2co's synthetic hard negatives inside lightly's MoCo.

lightly's MoCo recipe (its projection head, momentum update, memory bank and MoCo v2
transform) with one change: the loss. lightly's ``NTXentLoss(memory_bank_size=...)`` keeps the
bank inside the loss; here lightly's ``MemoryBankModule`` holds it, and
:func:`syn2co.losses.info_nce` takes the bank plus the logits of the synthetic negatives that
:func:`syn2co.negatives.synthetic_logits` makes from it (SynCo v2's counts). The bank module
returns a copy of its rows from before this batch's keys, so updating it before ``backward()``
is safe here::

    pip install -e ".[train,examples]"     # from a clone: lightly, torchvision
    python examples/lightly_moco.py --data DIR --epochs 100

``DIR`` is an image folder (``DIR/<class>/<image>``, or images directly in ``DIR``).
"""

from __future__ import annotations

import argparse
import copy
import math

import torch
import torchvision
from lightly.data import LightlyDataset
from lightly.models.modules import MoCoProjectionHead
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import MoCoV2Transform
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from syn2co.losses import info_nce
from syn2co.negatives import SYNCO_V2, synthetic_logits


class MoCo(nn.Module):
    """lightly's MoCo model: a backbone and projection head, and their momentum copies."""

    def __init__(self) -> None:
        super().__init__()
        resnet = torchvision.models.resnet18()
        self.backbone = nn.Sequential(*list(resnet.children())[:-1])
        self.projection_head = MoCoProjectionHead(512, 512, 128)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="image folder")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--steps", type=int, help="stop after this many steps (default: all epochs)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--bank-size", type=int, default=4096)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    dataset = LightlyDataset(args.data, transform=MoCoV2Transform(input_size=args.img_size))
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

    model = MoCo().to(device)
    bank = MemoryBankModule(size=(args.bank_size, 128), feature_dim_first=False).to(device)
    spec = SYNCO_V2.replace(n_hard=min(256, args.bank_size))
    gen = torch.Generator(device=device).manual_seed(args.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    print(f"{len(dataset)} images, {total} steps, synthetic negatives per query: {spec.total}")

    step = 0
    while step < total:
        for (x_query, x_key), _, _ in loader:
            if step == total:
                break
            momentum = cosine_schedule(step, total, 0.996, 1.0)
            update_momentum(model.backbone, model.backbone_momentum, m=momentum)
            update_momentum(model.projection_head, model.projection_head_momentum, m=momentum)
            query = model(x_query.to(device))
            with torch.no_grad():
                key = model.forward_momentum(x_key.to(device))
            # lightly's bank returns a copy of its rows from before this batch's keys: the
            # update does not touch what synthetic_logits' backward reads.
            key, negatives = bank(key, update=True)
            extra = synthetic_logits(query, negatives, spec, generator=gen)  # (B, 576)
            loss = info_nce(query, key, negatives, extra_similarity=extra, temperature=0.1)
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
