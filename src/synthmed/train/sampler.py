"""A resumable, seeded stream of training indices (exact resume needs exact batches)."""

from __future__ import annotations

import torch

from synthmed.errors import DataError


class IndexStream:
    """Endless shuffled passes over ``n`` items; each pass is a seeded permutation.

    Batches cross pass boundaries, so any batch size works for any dataset size. With several
    processes, each takes every ``world_size``-th index of the same permutation.

    Args:
        n: number of training items.
        seed: base seed; pass ``e`` uses permutation seed ``seed * 1_000_003 + e``.
        rank, world_size: this process's share.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if n < world_size:
            raise DataError(f"{n} training images cannot be shared by {world_size} processes")
        self.n, self.seed, self.rank, self.world = n, seed, rank, world_size
        self.epoch, self.pos = 0, 0
        self._perm = self._make_perm()

    def _make_perm(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g)[self.rank :: self.world]

    def next(self, batch_size: int) -> torch.Tensor:
        """Indices of the next batch: (batch_size,) int64."""
        out = []
        while len(out) < batch_size:
            if self.pos >= len(self._perm):
                self.epoch += 1
                self.pos = 0
                self._perm = self._make_perm()
            take = min(batch_size - len(out), len(self._perm) - self.pos)
            out.extend(self._perm[self.pos : self.pos + take].tolist())
            self.pos += take
        return torch.tensor(out, dtype=torch.long)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._make_perm()
