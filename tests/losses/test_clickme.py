"""The ClickMe map loss (GALA, Sec. 4) against hand-computed values, for the paper and the public code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnlib.losses.clickme import (
    PUBLIC_WEIGHT,
    clickme_loss,
    clickme_map_loss,
    map_distance,
    reduce_volume,
    resize_map,
)


def test_reduce_volume_by_hand():
    volume = torch.tensor([[[[3.0, 1.0]], [[4.0, -1.0]]]])  # B=1, C=2, H=1, W=2
    torch.testing.assert_close(reduce_volume(volume), torch.tensor([[[5.0, math.sqrt(2)]]]))
    torch.testing.assert_close(reduce_volume(volume, "public"), torch.tensor([[[12.5, 1.0]]]))
    with pytest.raises(ValueError, match="B x C x H x W"):
        reduce_volume(volume[0])
    with pytest.raises(ValueError, match="variant"):
        reduce_volume(volume, "tf")


def test_map_distance_by_hand():
    a, r = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]])
    # paper: [0.6, 0.8] vs [1, 0] -> ||[0.4, -0.8]|| = sqrt(0.8)
    torch.testing.assert_close(map_distance(a, r), torch.tensor([math.sqrt(0.8)]))
    # public: [1, 3] / sqrt(4) = [0.5, 1.5]; [4, 0] / 2 = [2, 0]; 0.5 * (1.5^2 + 1.5^2) = 2.25
    torch.testing.assert_close(
        map_distance(torch.tensor([[1.0, 3.0]]), torch.tensor([[4.0, 0.0]]), "public"), torch.tensor([2.25])
    )
    # scale invariance (paper) and zero maps stay finite
    torch.testing.assert_close(map_distance(7 * a, 0.1 * a), torch.tensor([0.0]))
    assert torch.isfinite(map_distance(torch.zeros(1, 2), r)).all()


def test_resize_map():
    human = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    torch.testing.assert_close(resize_map(human, (2, 2)), human)
    bicubic = F.interpolate(human[:, None], size=(5, 5), mode="bicubic", align_corners=False)[:, 0]
    torch.testing.assert_close(resize_map(human, (5, 5)), bicubic.clamp_min(0))
    assert bicubic.min() < 0 <= resize_map(human, (5, 5)).min()  # the cubic's overshoot is clipped
    public = resize_map(human[:, None], (3, 3), "public")
    torch.testing.assert_close(public[0, 1, 1], torch.tensor(0.5))  # the centre of aligned corners
    torch.testing.assert_close(public[0, 0, 2], torch.tensor(1.0))


def test_map_loss_sums_layers_and_averages_images():
    human = torch.zeros(2, 1, 4, 4)
    human[0, 0, :2, :2] = 1.0  # top-left quadrant
    human[1, 0, 2:, 2:] = 2.0  # bottom-right quadrant
    aligned = human.repeat(1, 3, 1, 1)  # every channel equals the human map: reduced map is proportional
    assert clickme_map_loss([aligned], human).item() == pytest.approx(0.0, abs=1e-6)
    # a uniform volume: distance of a quadrant indicator to uniform, per image, by hand
    uniform = torch.ones(2, 3, 4, 4)
    quadrant = torch.zeros(16)
    quadrant[:4] = 0.5  # 4 ones / ||.||_2 = 2
    expected = (quadrant - torch.full((16,), 0.25)).norm().item()  # 16 ones / 4
    assert clickme_map_loss([uniform], human).item() == pytest.approx(expected, rel=1e-6)
    # two layers (the second at 2 x 2 after the bicubic resize): the terms add up
    small = torch.ones(2, 5, 2, 2)
    two = clickme_map_loss([uniform, small], human).item()
    one = clickme_map_loss([small], human).item()
    assert two == pytest.approx(expected + one, rel=1e-6)


def test_public_variant_masks_images_without_clicks_and_averages_layers():
    human = torch.zeros(2, 1, 2, 2)
    human[0, 0, 0, 0] = 4.0
    volume = torch.zeros(2, 1, 2, 2)
    volume[:, 0, 1, 1] = 2.0  # reduced (mean of squares): 4 at (1, 1)
    # image 0: r = [2, 0, 0, 0], a = [0, 0, 0, 2] -> 0.5 * (4 + 4) = 4; image 1 has no clicks: masked
    assert clickme_map_loss([volume], human, "public").item() == pytest.approx(4.0)
    assert clickme_map_loss([volume, volume], human, "public").item() == pytest.approx(4.0)  # mean, not sum
    assert clickme_map_loss([volume], torch.zeros(2, 1, 2, 2), "public").item() == 0.0


def test_images_without_a_map_are_left_out_of_the_map_term():
    human = torch.zeros(3, 1, 4, 4)
    human[0, 0, :2, :2] = 1.0
    human[2, 0, 2:, 2:] = 5.0  # has clicks, but its item says it has no map: never scored
    volume = human.repeat(1, 3, 1, 1)  # image 0: aligned with its map, distance 0
    volume[1:] = 1.0  # images 1 and 2: uniform; image 1's zero map gives distance || 0 - A / ||A|| || = 1
    volume.requires_grad_(True)
    has_map = torch.tensor([True, True, False])
    assert clickme_map_loss([volume], human, has_map=has_map).item() == pytest.approx(0.5)  # (0 + 1) / 2
    only_first = clickme_map_loss([volume, volume], human, has_map=torch.tensor([True, False, False]))
    assert only_first.item() == pytest.approx(0.0, abs=1e-6)
    none = clickme_map_loss([volume], human, has_map=torch.zeros(3, dtype=torch.bool))
    assert none.item() == 0.0
    none.backward()
    assert volume.grad is not None and volume.grad.abs().sum() == 0
    # public: image 2 has clicks but no map -> masked; image 0 distance 0, image 1 no clicks -> masked
    assert clickme_map_loss([volume], human, "public", has_map).item() == pytest.approx(0.0, abs=1e-6)
    public_all = clickme_map_loss([volume], human, "public")  # image 2 counts: 0.5 * sum (r - a)^2, by hand
    # r: 5 on 4 px -> 5 / sqrt(20) each; a: 1 on 16 px -> 1 / 4 each
    r = 5 / 20**0.5
    expected = 0.5 * (4 * (r - 0.25) ** 2 + 12 * 0.25**2) / 2  # averaged with image 0's 0
    assert public_all.item() == pytest.approx(expected, rel=1e-5)
    logits, labels = torch.zeros(3, 2), torch.tensor([0, 1, 1])
    total, ce, term = clickme_loss(logits, labels, [volume.detach()], human, has_map=has_map)
    torch.testing.assert_close(ce, torch.tensor(math.log(2)))  # every image, map or not
    torch.testing.assert_close((total, term), (ce + 6.0 * 0.5, torch.tensor(0.5)))
    with pytest.raises(ValueError, match="one boolean per image"):
        clickme_map_loss([volume], human, has_map=has_map[:2])


def test_weight_defaults_to_the_variants():
    torch.manual_seed(2)
    logits, labels = torch.randn(2, 5), torch.tensor([1, 3])
    volume, human = torch.rand(2, 4, 3, 3), torch.rand(2, 1, 12, 12)
    for variant, weight in (("paper", 6.0), ("public", 1e-5)):
        total, ce, term = clickme_loss(logits, labels, [volume], human, variant=variant)
        torch.testing.assert_close(total, ce + weight * term)
    assert PUBLIC_WEIGHT == 1e-5
    total, ce, term = clickme_loss(logits, labels, [volume], human, weight=2.0, variant="public")
    torch.testing.assert_close(total, ce + 2.0 * term)


def test_total_loss_and_gradients():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 5), torch.tensor([1, 3])
    volume = torch.rand(2, 4, 3, 3, requires_grad=True)
    human = torch.rand(2, 1, 12, 12)
    total, ce, term = clickme_loss(logits, labels, [volume], human, weight=6.0)
    torch.testing.assert_close(ce, F.cross_entropy(logits, labels))
    torch.testing.assert_close(total, ce + 6.0 * clickme_map_loss([volume], human))
    total.backward()
    assert volume.grad is not None and volume.grad.abs().sum() > 0
    zero, ce0, term0 = clickme_loss(logits, labels, [volume.detach()], human, weight=0.0)
    torch.testing.assert_close(zero, ce0)
    torch.testing.assert_close(term0, term.detach())


def test_grouped_scoring_equals_layer_by_layer():
    """Volumes of one shape are scored together; the result equals the per-layer definition."""
    torch.manual_seed(1)
    volumes = [torch.rand(3, 4, 5, 5), torch.rand(3, 4, 5, 5), torch.rand(3, 2, 3, 3), torch.rand(3, 4, 5, 5)]
    human = torch.rand(3, 1, 20, 20)
    human[1] = 0  # an image without clicks
    for variant in ("paper", "public"):
        per_layer = []
        for volume in volumes:
            d = map_distance(
                reduce_volume(volume, variant), resize_map(human, volume.shape[-2:], variant), variant
            )
            per_layer.append(d.mean() if variant == "paper" else d[[0, 2]].mean())
        expected = torch.stack(per_layer).sum() if variant == "paper" else torch.stack(per_layer).mean()
        torch.testing.assert_close(clickme_map_loss(volumes, human, variant), expected)
