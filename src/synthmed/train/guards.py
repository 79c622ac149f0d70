"""Guards that tell a user, while training, that a run has failed in one of the usual ways.

* **posterior collapse** (VAEs): the KL term of the ELBO has fallen to almost nothing, so the latent
  code carries (almost) no information about the image and every reconstruction and sample is the
  same mean image (Bowman et al. 2016; Lucas et al. 2019).  Trigger: ``loss_kl`` < ``KL_COLLAPSE_NATS``
  nats per image.
* **the discriminator wins outright** (GANs): D puts (almost) every real and fake image on the right
  side of 0 (``d_acc`` >= ``D_WINS_ACCURACY``), so the generator gets vanishing or useless gradients;
  on small data this is D memorising the training set (Karras et al. 2020).
* **mode collapse** (every generator): the samples of a batch are nearly the same image.  ``diversity``
  is the mean pairwise L2 distance between the preview samples divided by that between as many real
  training images (1 = as varied as real data); trigger: below ``DIVERSITY_COLLAPSE``.

A guard fires when its condition holds at ``patience`` consecutive log intervals (``PREVIEW_PATIENCE``
consecutive previews for ``diversity``: previews are rare, and the collapsed brain tumour run had only
two low ones in a row before its end), and again only after the condition has cleared.  Each firing is a warning in the log,
a 0/1 column ``guard_<name>`` in ``metrics.csv``, an entry in ``run.json``'s ``warnings`` and a line in
``synthmed evaluate``'s report of samples from the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: KL (nats per image, summed over latent dimensions) below which the posterior has collapsed
KL_COLLAPSE_NATS = 1.0
#: discriminator accuracy (real > 0, fake < 0) at or above which it "wins outright"
D_WINS_ACCURACY = 0.99
#: in-batch diversity (samples' mean pairwise distance / real images') below which samples have collapsed.
#: Measured on the reference runs: healthy generators 0.64-1.4 (BreastMNIST VAE and GANs, AdrenalMNIST3D
#: SN-GANs); an SN-GAN on the brain tumour set that produced one blob-shaped brain for every latent 0.17-0.21.
DIVERSITY_COLLAPSE = 0.3
#: consecutive previews below ``DIVERSITY_COLLAPSE`` before the mode-collapse guard fires
PREVIEW_PATIENCE = 2

GUARDS = {
    "posterior_collapse": ("loss_kl", lambda v: v < KL_COLLAPSE_NATS,
                           "posterior collapse: KL = {value:.3g} nats per image (< {limit:g}) for {n} checks in a row; "
                           "the latent code carries almost no information, reconstructions and samples become one "
                           "mean image. Raise model.reconstruction_scale, or use model.kl_warmup / model.free_bits",
                           KL_COLLAPSE_NATS),
    "d_wins": ("d_acc", lambda v: v >= D_WINS_ACCURACY,
               "the discriminator wins outright: it classifies {value:.1%} of real and fake images correctly "
               "(>= {limit:.0%}) for {n} checks in a row, so the generator learns little; try augment.enabled=true "
               "with augment.ada_target=0.6, train.r1_gamma > 0, or a lower train.lr_d",
               D_WINS_ACCURACY),
    "mode_collapse": ("diversity", lambda v: v < DIVERSITY_COLLAPSE,
                      "samples have collapsed: in-batch diversity {value:.3f} of the real images' (< {limit:g}) for {n} "
                      "checks in a row; the generator produces nearly one image. Try a lower learning rate, R1 "
                      "(train.r1_gamma) or adaptive augmentation", DIVERSITY_COLLAPSE),
}


def diversity_ratio(samples: np.ndarray, real: np.ndarray) -> float:
    """Mean pairwise L2 distance of ``samples`` divided by that of ``real`` (each (n, ...), n >= 2).

    1 means the samples are as different from one another as real images are; 0 means identical samples.
    """
    def mean_pdist(x: np.ndarray) -> float:
        f = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        sq = (f * f).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * f @ f.T, 0.0)
        iu = np.triu_indices(len(f), 1)
        return float(np.sqrt(d2[iu]).mean())

    if len(samples) < 2 or len(real) < 2:
        raise ValueError("diversity needs at least two samples and two real images")
    ref = mean_pdist(real)
    return mean_pdist(samples) / ref if ref > 0 else float("nan")


@dataclass
class Guards:
    """Watches logged values; :meth:`check` returns the warnings that fire at this check."""

    patience: int = 5
    streak: dict[str, int] = field(default_factory=dict)
    fired: dict[str, bool] = field(default_factory=dict)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def check(self, step: int, values: dict[str, float]) -> dict[str, str]:
        """Update the streaks with the values present in ``values``; returns ``{guard: message}`` of the
        guards that fire now.  Adds ``guard_<name>`` 0/1 entries to ``values`` for every watched value."""
        new: dict[str, str] = {}
        for name, (key, bad, text, limit) in GUARDS.items():
            if key not in values or not np.isfinite(values[key]):
                continue
            value = float(values[key])
            if bad(value):
                self.streak[name] = self.streak.get(name, 0) + 1
            else:
                self.streak[name] = 0
                self.fired[name] = False
            on = self.streak[name] >= (PREVIEW_PATIENCE if key == "diversity" else self.patience)
            values[f"guard_{name}"] = float(on)
            if on and not self.fired.get(name):
                self.fired[name] = True
                msg = text.format(value=value, limit=limit, n=self.streak[name])
                new[name] = msg
                self.warnings.append({"step": int(step), "guard": name, "value": value, "message": msg})
                log.warning("step %d: %s", step, msg)
        return new

    def state_dict(self) -> dict[str, Any]:
        return {"patience": self.patience, "streak": dict(self.streak), "fired": dict(self.fired),
                "warnings": list(self.warnings)}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        self.streak = dict(state.get("streak", {}))
        self.fired = dict(state.get("fired", {}))
        self.warnings = list(state.get("warnings", []))
