"""Training one network classifier: AdamW, the model at minimum validation loss (paper 000).

"All classifiers are trained past their convergence and the classifier at the minimum validation
loss of each split is chosen" (paper 000, "Diagnosis classifier").  An epoch is one pass over the
training set in a seeded random order; after every epoch the loss on the REAL validation set is
computed in eval mode and the weights with the lowest one are kept.  The infinite set draws a fresh
synthetic batch every iteration and validates every ``eval_every`` iterations instead.

Two classes use one logit and the binary cross-entropy (paper 000's single sigmoid output); more
classes use one logit per class and the cross-entropy.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synthmed.errors import TrainingDiverged
from synthmed.progress import progress as progress_bar

#: (iteration) -> (images (B, 1, *S), labels (B,)) of a fresh synthetic batch.
BatchSource = Callable[[int], tuple[np.ndarray, np.ndarray]]


@dataclass
class FitResult:
    """What one training run returns.

    Attributes:
        state: the weights at minimum validation loss.
        best_epoch: its epoch (1-based; for the infinite set: its validation round).
        best_val_loss: that loss.
        epochs: epochs (validation rounds) run.
        iterations: optimiser steps run.
        history: one dict per epoch: epoch, iteration, train_loss, val_loss.
        seconds: wall time.
    """

    state: dict[str, Tensor]
    best_epoch: int
    best_val_loss: float
    epochs: int
    iterations: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def loss_fn(logits: Tensor, y: Tensor, n_classes: int) -> Tensor:
    """Mean BCE-with-logits (two classes, ``logits`` (B, 1)) or cross-entropy (``logits`` (B, K))."""
    if n_classes == 2:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.float())
    return F.cross_entropy(logits, y.long())


def to_scores(logits: Tensor, n_classes: int) -> Tensor:
    """Probability of class 1 (B,) for two classes, class probabilities (B, K) otherwise."""
    return torch.sigmoid(logits[:, 0]) if n_classes == 2 else torch.softmax(logits, dim=1)


@torch.no_grad()
def predict_scores(model: nn.Module, images: np.ndarray, n_classes: int, batch_size: int = 12,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Scores of ``images`` (N, 1, *S) in eval mode (see :func:`to_scores`)."""
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size], dtype=np.float32)).to(device)
        out.append(to_scores(model(x), n_classes).float().cpu())
    model.train(was)
    return torch.cat(out).numpy() if out else np.empty((0,) if n_classes == 2 else (0, n_classes), np.float32)


@torch.no_grad()
def mean_loss(model: nn.Module, images: np.ndarray, labels: np.ndarray, n_classes: int, batch_size: int,
              device: str | torch.device) -> float:
    """Mean loss over a set, in eval mode (independent of the batch size)."""
    was = model.training
    model.eval()
    total = 0.0
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size], dtype=np.float32)).to(device)
        y = torch.from_numpy(np.asarray(labels[i:i + batch_size])).to(device)
        total += float(loss_fn(model(x), y, n_classes)) * len(x)
    model.train(was)
    return total / max(1, len(images))


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, n_classes: int) -> float:
    loss = loss_fn(model(x), y, n_classes)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingDiverged(f"classifier loss became {value}; lower train.lr")
    return value


def fit_classifier(model: nn.Module, train: tuple[np.ndarray, np.ndarray] | None,
                   val: tuple[np.ndarray, np.ndarray], n_classes: int, *, lr: float, weight_decay: float,
                   betas: tuple[float, float] = (0.9, 0.999), batch_size: int = 12, max_epochs: int = 100,
                   patience: int = 0, eval_batch_size: int = 12, seed: int = 0, device: str | torch.device = "cpu",
                   augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
                   infinite: BatchSource | None = None, eval_every: int = 1, max_iterations: int = 0,
                   progress: bool = False, desc: str = "classifier") -> FitResult:
    """Train ``model`` in place; return the weights at minimum validation loss.

    Args:
        model: the classifier (on ``device``).
        train: (images (N, 1, *S) in [-1, 1], labels (N,)), or None with ``infinite``.
        val: real validation images and labels.
        n_classes: number of classes.
        lr, weight_decay, betas: AdamW (paper 000: 5e-6, 0.01).
        batch_size: images per step (paper 000: 12); a last batch of one image is dropped
            (BatchNorm needs two).
        max_epochs: epochs (without ``infinite``).
        patience: stop after this many epochs without a lower validation loss (0: never).
        eval_batch_size: images per forward pass of the validation.
        seed: seeds the batch order and the augmentation.
        augment: ``(x, generator) -> x`` applied to every training batch.
        infinite: a fresh batch per iteration instead of ``train`` (the synthetic-infinite set).
        eval_every: iterations per validation round with ``infinite``.
        max_iterations: iterations of the infinite set (0: ``max_epochs * eval_every``); ``patience``
            then counts validation rounds.
        progress: show a progress bar over epochs.

    Returns:
        A :class:`FitResult`; ``model`` holds the best weights afterwards.
    """
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=betas)
    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    history: list[dict[str, float]] = []
    it, since_best = 0, 0
    rounds, cap = max_epochs, 0
    if infinite is not None:
        cap = max_iterations or max_epochs * eval_every
        rounds = math.ceil(cap / eval_every)
    bar = progress_bar(range(1, rounds + 1), desc=desc, disable=not progress, leave=False, unit="epoch")
    model.train()
    epoch = 0
    for epoch in bar:
        losses = []
        n_inf = min(eval_every, cap - it) if infinite is not None else 0
        for x, y in _batches(train, infinite, batch_size, n_inf, it, gen):
            if len(x) < 2:
                continue
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            if augment is not None:
                xt = augment(xt, gen)
            losses.append(_step(model, opt, xt.to(device), torch.from_numpy(np.asarray(y)).to(device), n_classes))
            it += 1
        val_loss = mean_loss(model, val[0], val[1], n_classes, eval_batch_size, device)
        history.append({"epoch": epoch, "iteration": it, "train_loss": float(np.mean(losses)) if losses else math.nan,
                        "val_loss": val_loss})
        if val_loss < best[0]:
            best, since_best = (val_loss, epoch, copy.deepcopy(model.state_dict())), 0
        else:
            since_best += 1
        bar.set_postfix(val_loss=f"{val_loss:.4f}", best=best[1])
        if patience and since_best >= patience:
            break
    model.load_state_dict(best[2])
    model.eval()
    return FitResult(best[2], best[1], best[0], epoch, it, history, time.perf_counter() - t0)


def _batches(train: tuple[np.ndarray, np.ndarray] | None, infinite: BatchSource | None, batch_size: int,
             eval_every: int, it: int, gen: torch.Generator) -> Any:
    """The batches of one epoch (or one validation round of the infinite set)."""
    if infinite is not None:
        for k in range(eval_every):
            yield infinite(it + k)
        return
    assert train is not None
    order = torch.randperm(len(train[0]), generator=gen).numpy()
    for i in range(0, len(order), batch_size):
        idx = np.sort(order[i:i + batch_size])  # sorted: contiguous reads from memory maps
        yield train[0][idx], train[1][idx]
