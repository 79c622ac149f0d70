"""Adaptive augmentation strength (Karras et al. 2020, "Training Generative Adversarial Networks with
Limited Data", Sec. 3 "Adaptive discriminator augmentation").

The discriminator overfits a small training set when it grows too sure of the real images.  ADA
measures that with the heuristic

    r_t = E[sign(D_train)]

over the real images' logits of the last ``interval`` discriminator updates and moves the augmentation
probability ``p`` up when ``r_t`` exceeds the ``target`` (0.6) and down otherwise, by a fixed step

    p <- clip(p + sign(r_t - target) * batch_size * interval / (ada_kimg * 1000), 0, 1)

so that ``p`` can go from 0 to 1 in ``ada_kimg`` thousand images.  Here ``p`` is the per-sample
probability of each n-D DiffAugment operation (``synthmed.augment.diffaugment``) instead of ADA's 2D
pipeline; as in ADA every augmentation is applied to real and generated images alike.
"""

from __future__ import annotations

from typing import Any


class AdaptiveAugment:
    """The ADA controller: feed it ``mean sign(D(real))`` of every discriminator update.

    Args:
        augment: the augmentation whose ``p`` is adjusted (any object with a float attribute ``p``).
        target: the value of r_t to hold (0.6 in StyleGAN2-ADA).
        interval: updates between adjustments (4).
        ada_kimg: thousands of images for ``p`` to move from 0 to 1 (500).
        batch_size: images per discriminator update (all processes together).
    """

    def __init__(self, augment: Any, target: float = 0.6, interval: int = 4, ada_kimg: float = 500.0,
                 batch_size: int = 4) -> None:
        if not hasattr(augment, "p"):
            raise ValueError(f"{type(augment).__name__} has no application probability 'p' to adapt")
        if interval < 1 or not ada_kimg > 0:
            raise ValueError(f"interval must be >= 1 and ada_kimg > 0, got {interval} and {ada_kimg}")
        self.augment, self.target, self.interval = augment, float(target), int(interval)
        self.step_size = batch_size * interval / (ada_kimg * 1000.0)
        self.sum, self.count = 0.0, 0
        #: the last value of the heuristic r_t (nan before the first adjustment)
        self.rt = float("nan")

    @property
    def p(self) -> float:
        return float(self.augment.p)

    def observe(self, sign_mean: float) -> bool:
        """Add one update's ``mean sign(D(real))``; adjust ``p`` every ``interval`` calls.

        Returns:
            Whether ``p`` was adjusted by this call.
        """
        self.sum += float(sign_mean)
        self.count += 1
        if self.count < self.interval:
            return False
        self.rt = self.sum / self.count
        direction = (self.rt > self.target) - (self.rt < self.target)
        self.augment.p = min(max(self.p + direction * self.step_size, 0.0), 1.0)
        self.sum, self.count = 0.0, 0
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p, "sum": self.sum, "count": self.count, "rt": self.rt}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.augment.p = float(state["p"])
        self.sum, self.count, self.rt = float(state["sum"]), int(state["count"]), float(state["rt"])
