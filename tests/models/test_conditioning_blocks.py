"""Known answers for the conditioning and progressive-GAN building blocks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from synthmed.losses.adversarial import gradient_penalty
from synthmed.models.gan.conditioning import class_loss, label_code
from synthmed.models.gan.pggan import PGGANDiscriminator, PGGANGenerator, progressive_schedule
from synthmed.nn.conditional import ClassHead, LabelEmbedding, ProjectionHead, concat_label
from synthmed.nn.progressive import (
    AdaIN,
    ConditionalPixelNorm,
    EqualizedConv,
    EqualizedLinear,
    MinibatchStd,
    PixelNorm,
    seeded_noise,
    upsample,
)


def test_projection_logits_are_inner_products_with_the_class_embedding() -> None:
    head = ProjectionHead(3, 2, spectral_norm=False)
    v = torch.tensor([[1.0, 0.0], [2.0, -1.0], [0.0, 3.0]])  # (C, K): column k is the embedding of class k
    with torch.no_grad():
        head.embed.weight.copy_(v)
    h = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    phi = h.sum((2, 3))  # global sum pooling
    one_hot = label_code(torch.tensor([0, 1]), 2, False)
    expected = torch.stack([phi[0] @ v[:, 0], phi[1] @ v[:, 1]])
    torch.testing.assert_close(head(h, one_hot), expected)
    both = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # multi-label: the present findings' terms add up
    torch.testing.assert_close(head(h, both), torch.stack([phi[0] @ (v[:, 0] + v[:, 1]), torch.tensor(0.0)]))


def test_class_head_and_label_embedding_shapes() -> None:
    head = ClassHead(3, 4, 5, (2, 2, 2), spectral_norm=True)
    assert head(torch.randn(3, 4, 2, 2, 2)).shape == (3, 5)
    emb = LabelEmbedding(3)
    code = label_code(torch.tensor([2, 0]), 3, False)
    torch.testing.assert_close(emb(code), torch.tensor([[0.0, 0, 1], [1, 0, 0]]))
    assert LabelEmbedding(3, 7)(code).shape == (2, 7)
    z = torch.zeros(2, 4)
    assert concat_label(z, code, emb).shape == (2, 7)
    with pytest.raises(ValueError, match="conditional"):
        concat_label(z, None, emb)


def test_label_code_checks_shape_and_range() -> None:
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        label_code(torch.tensor([0, 2]), 2, False)
    with pytest.raises(ValueError, match="0 or 1"):
        label_code(torch.tensor([[0, 2]]), 2, True)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        label_code(torch.tensor([[0, 1]]), 3, True)
    multi = torch.tensor([[1.0, 0.0, 1.0]])
    torch.testing.assert_close(label_code(multi, 3, True), multi)
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    torch.testing.assert_close(class_loss(logits, multi, True), F.binary_cross_entropy_with_logits(logits, multi))
    torch.testing.assert_close(class_loss(logits, torch.tensor([2]), False), F.cross_entropy(logits, torch.tensor([2])))


def test_pixel_norm_and_conditional_pixel_norm_eq1() -> None:
    a = torch.tensor([[[[3.0]], [[4.0]]]])  # (1, 2, 1, 1): mean square 12.5
    torch.testing.assert_close(PixelNorm()(a), a / math.sqrt(12.5 + 1e-8))
    cpn = ConditionalPixelNorm(2, 3)
    s = torch.tensor([[1.0, -2.0, 0.5]])
    torch.testing.assert_close(cpn(a, s), PixelNorm()(a))  # starts as the plain pixel norm
    with torch.no_grad():
        cpn.gamma.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        cpn.beta.weight.copy_(torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0]]))
    gamma = torch.tensor([1.0 + 1.0, 1.0 - 2.0])  # W1 s + b1
    beta = torch.tensor([1.0, 0.0])  # W2 s + b2
    expected = a / math.sqrt(12.5 + 1e-8) * gamma.reshape(1, 2, 1, 1) + beta.reshape(1, 2, 1, 1)
    torch.testing.assert_close(cpn(a, s), expected)


def test_minibatch_std_known_answer() -> None:
    x = torch.tensor([[[[0.0, 2.0]]], [[[2.0, 2.0]]]])  # (2, 1, 1, 2); per-feature population std: 1, 0
    out = MinibatchStd(group_size=2)(x)
    assert out.shape == (2, 2, 1, 2)
    expected = (math.sqrt(1 + 1e-8) + math.sqrt(1e-8)) / 2
    torch.testing.assert_close(out[:, 1], torch.full((2, 1, 2), expected))
    torch.testing.assert_close(out[:, :1], x)
    # groups of 2 in a batch of 4 interleave as in Karras et al.: samples (0, 2) and (1, 3)
    y = torch.cat([x, torch.zeros(2, 1, 1, 2)])
    g = MinibatchStd(group_size=2)(y)[:, 1, 0, 0]
    s0 = (math.sqrt(1e-8) + math.sqrt(1 + 1e-8)) / 2  # (0, 2) vs (0, 0): stds 0 and 1
    s1 = math.sqrt(1 + 1e-8)  # (2, 2) vs (0, 0): stds 1 and 1
    torch.testing.assert_close(g, torch.tensor([s0, s1, s0, s1]))


def test_equalized_lr_scaling() -> None:
    conv = EqualizedConv(2, 3, 4, 3)
    x = torch.randn(2, 3, 5, 5)
    c = math.sqrt(2) / math.sqrt(3 * 9)
    assert conv.scale == pytest.approx(c)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight * c, conv.bias, padding=1))
    lin = EqualizedLinear(8, 2, gain=1.0, lr_mul=0.01)
    v = torch.randn(3, 8)
    torch.testing.assert_close(lin(v), F.linear(v, lin.weight * (0.01 / math.sqrt(8)), lin.bias * 0.01))
    # the stored weights are N(0, 1) (N(0, 1/lr_mul^2) with a multiplier): the effective init is He's
    big = EqualizedConv(3, 64, 64, 3)
    assert big.weight.std().item() == pytest.approx(1.0, abs=0.05)


def test_gradient_penalty_of_a_linear_critic() -> None:
    w = torch.tensor([3.0, 4.0])  # D(x) = w . x: |grad| = 5 everywhere, penalty (5 - 1)^2 = 16
    gp = gradient_penalty(lambda x: x.flatten(1) @ w, torch.randn(4, 1, 2), torch.randn(4, 1, 2))
    torch.testing.assert_close(gp, torch.tensor(16.0))


def test_adain_known_answer_and_seeded_noise() -> None:
    ada = AdaIN(2, 3)
    x = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])  # (1, 2, 2): channel means 2, 2; stds 1, 2
    w = torch.zeros(1, 3)
    torch.testing.assert_close(ada(x, w), torch.tensor([[[-1.0, 1.0], [-1.0, 1.0]]]), atol=1e-6, rtol=0)
    z = torch.randn(3, 5)
    a, b = seeded_noise(z, [(4,), (2, 2)]), seeded_noise(z[1:2], [(4,), (2, 2)])
    assert a[0].shape == (3, 1, 4) and a[1].shape == (3, 1, 2, 2)
    torch.testing.assert_close(a[0][1:2], b[0])  # a sample's noise depends only on its own latent


@pytest.mark.parametrize(("seen", "expected"), [(0, (1, 1.0)), (9, (1, 1.0)), (10, (2, 0.0)), (15, (2, 0.5)),
                                                (20, (2, 1.0)), (30, (3, 0.0)), (49, (3, 1.0)), (10_000, (3, 1.0))])
def test_progressive_schedule(seen: int, expected: tuple[int, float]) -> None:
    level, alpha = progressive_schedule(seen, 10, start_level=1, n_levels=4)
    assert level == expected[0] and alpha == pytest.approx(expected[1])


def test_progressive_fade_in_blends_the_two_levels() -> None:
    g = PGGANGenerator(2, 16, latent_dim=8, base_channels=4, max_channels=8)  # levels 4, 8, 16
    z = torch.randn(2, 8)
    g.set_progress(1, 1.0)
    new = g(z)
    g.set_progress(0, 1.0)
    old = g(z)
    g.set_progress(1, 0.0)
    torch.testing.assert_close(g(z), old)  # alpha 0: only the previous level (upsampled)
    g.set_progress(1, 0.25)
    torch.testing.assert_close(g(z), 0.75 * old + 0.25 * new)
    assert new.shape == (2, 1, 16, 16) and torch.equal(new, upsample(new[:, :, ::2, ::2]))
    d = PGGANDiscriminator(2, 16, base_channels=4, max_channels=8)
    d.set_progress(2, 1.0)
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(d.fade_real(x), x)  # the last level, faded in: the real images as they are
    d.set_progress(1, 1.0)
    assert d(x).shape == (2,)
    with pytest.raises(ValueError, match="level"):
        d.set_progress(3, 1.0)
