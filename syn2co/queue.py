"""The FIFO bank of negatives (MoCo's queue), with exact save and restore."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from syn2co import _checks as chk
from syn2co import distributed

__all__ = ["NegativeQueue"]


class NegativeQueue(nn.Module):
    """A first-in first-out bank of L2-normalised keys (MoCo, MoBY).

    All state lives in persistent buffers allocated up front, so ``state_dict`` /
    ``load_state_dict`` restore the queue exactly, ``.to(device)`` moves it, and DDP sees a
    fixed shape from the first step. The bank starts as random unit vectors (each *row*
    normalised; MoCo v1's code normalised the wrong axis), as in MoCo.

    :meth:`enqueue` first gathers the keys of all ranks (rank order, without gradient), so
    every rank holds the same queue. Enqueue after the loss, so that a batch never sees its
    own keys among its negatives.

    With ``tags=True`` the queue also keeps an integer tag per row (for example the source of
    the image a key came from, real or synthetic), enqueued with the keys; rows never written
    carry -1. This lets diagnostics tell real from synthetic negatives.

    Args:
        size: Number of keys K the queue holds.
        dim: Embedding size D.
        dtype: Storage dtype (float32 by default: the bank feeds float32 logits).
        device: Device of the buffers.
        generator: Random generator for the initial bank.
        tags: Keep an integer tag per row.

    Example:
        >>> queue = NegativeQueue(4, 2, generator=torch.Generator().manual_seed(0))
        >>> queue.enqueue(torch.tensor([[3.0, 4.0]]))
        >>> queue.bank[0]
        tensor([0.6000, 0.8000])
        >>> int(queue.ptr), int(queue.count)
        (1, 1)
    """

    keys: Tensor
    ptr: Tensor
    count: Tensor
    tags: Tensor | None

    def __init__(
        self,
        size: int,
        dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        tags: bool = False,
    ) -> None:
        super().__init__()
        chk.check_int("size", size, minimum=1)
        chk.check_int("dim", dim, minimum=1)
        if not dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating-point dtype, got {dtype}")
        init = torch.randn(size, dim, generator=chk.check_generator("generator", generator))
        self.register_buffer("keys", F.normalize(init, dim=1).to(device=device, dtype=dtype))
        # Next row to overwrite, and the number of keys enqueued so far (both on the device,
        # so enqueueing never synchronises with the host).
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("count", torch.zeros((), dtype=torch.long, device=device))
        initial_tags = torch.full((size,), -1, dtype=torch.long, device=device) if tags else None
        self.register_buffer("tags", initial_tags)

    @property
    def size(self) -> int:
        """K, the number of rows."""
        return int(self.keys.shape[0])

    @property
    def dim(self) -> int:
        """D, the embedding size."""
        return int(self.keys.shape[1])

    @property
    def bank(self) -> Tensor:
        """The current bank, shape (K, D): a detached *view* of the queue's storage.

        The next :meth:`enqueue` overwrites rows of this very tensor with the new keys, so a
        bank read before ``enqueue(k)`` and used after it contains ``k``: use it (loss,
        synthesis, diagnostics) before enqueueing, or keep a snapshot, ``queue.bank.clone()``.
        Do not modify it in place. Row order is storage order (not age order); the loss does
        not depend on it.

        Example:
            >>> queue = NegativeQueue(2, 2, generator=torch.Generator().manual_seed(0))
            >>> view, snapshot = queue.bank, queue.bank.clone()
            >>> queue.enqueue(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
            >>> torch.equal(view, queue.bank), torch.equal(snapshot, queue.bank)
            (True, False)
        """
        return self.keys.detach()

    @property
    def bank_tags(self) -> Tensor:
        """The tag of each row, shape (K,), long (-1 for rows never written).

        Raises:
            ValueError: If the queue was built without ``tags=True``.
        """
        if self.tags is None:
            raise ValueError("bank_tags: this queue keeps no tags; build it with tags=True")
        return self.tags.detach()

    @torch.no_grad()
    def enqueue(self, keys: Tensor, tags: Tensor | None = None) -> None:
        """Gather ``keys`` (and ``tags``) from all ranks and write them over the oldest rows.

        Args:
            keys: This rank's keys, shape (B, D); normalised before storage. If all ranks
                together bring more than K keys, only the newest K are kept.
            tags: Integer tags of shape (B,), for a queue built with ``tags=True`` (required
                there, refused otherwise).
        """
        chk.check_embeddings("keys", keys, "(B, D)", dim=self.dim)
        chk.check_finite(("keys", keys))
        chk.check_same_device("keys", keys, "the queue's buffers", self.keys)
        if (tags is None) != (self.tags is None):
            want = "tags of shape (B,)" if self.tags is not None else "no tags (tags=False)"
            raise ValueError(
                f"tags: this queue expects {want}, got {'none' if tags is None else 'tags'}"
            )
        rows = F.normalize(distributed.gather(keys).float(), dim=1).to(self.keys.dtype)
        n, size = rows.shape[0], self.size
        start = self.ptr
        skip = max(0, n - size)  # only the newest `size` rows survive, where they would land
        rows = rows[skip:]
        start = (self.ptr + skip) % size
        idx = (start + torch.arange(rows.shape[0], device=self.keys.device)) % size
        self.keys.index_copy_(0, idx, rows)
        if self.tags is not None and tags is not None:
            chk.check_tensor("tags", tags)
            if tags.dtype.is_floating_point or tuple(tags.shape) != (keys.shape[0],):
                raise ValueError(
                    f"tags: expected an integer tensor of shape (B,) = ({keys.shape[0]},), "
                    f"got {tags.dtype} of shape {tuple(tags.shape)}"
                )
            all_tags = distributed.gather(tags.to(self.tags.device, torch.long))[skip:]
            self.tags.index_copy_(0, idx, all_tags)
        self.ptr.copy_((self.ptr + n) % size)
        self.count.add_(n)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, dtype={self.keys.dtype}"
