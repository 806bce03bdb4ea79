"""Saliency for segmenters: class scores over predicted regions, Grad-CAM maps, the target layer."""

import numpy as np
import torch
from torch import nn

from sciconv import models
from sciconv.saliency import ClassScores, class_saliency, predicted_regions


def test_class_scores_average_each_class_logits_over_its_predicted_pixels():
    prediction = np.array([[0, 1], [1, 2]])
    regions = predicted_regions(prediction, num_classes=4)
    assert torch.allclose(regions.flatten(1).sum(1), torch.ones(4))
    logits = torch.arange(16, dtype=torch.float32).reshape(1, 4, 2, 2)
    scores = ClassScores(nn.Identity(), regions)(logits)[0]
    assert scores[1] == (5 + 6) / 2  # class 1 predicted at (0,1) and (1,0)
    assert scores[2] == 11  # class 2 predicted at (1,1)
    assert scores[3] == logits[0, 3].mean()  # never predicted: whole-image mean


def test_gradcam_maps_cover_the_image_and_pick_a_feature_layer():
    args = {"name": "unet", "spatial_dims": 2, "in_channels": 2, "out_channels": 5, "channels": [8, 16, 32],
            "strides": [2, 2], "num_res_units": 1, "dropout": 0.0, "norm": "none"}
    net = models.build(args).eval()
    layer = models.last_conv_before_output(net, (1, 2, 32, 32))
    assert dict(net.named_modules())[layer].out_channels != 5  # a feature layer, not the class head
    image = np.random.default_rng(0).normal(size=(2, 32, 48)).astype(np.float32)
    prediction = np.zeros((32, 48), dtype=np.uint8)
    prediction[10:14, 20:24] = 1
    maps = class_saliency(net, image, prediction, 5, "gradcam", layer, [32, 32])
    assert sorted(maps) == [1, 2, 3, 4]
    for saliency in maps.values():
        assert saliency.shape == (32, 48) and np.isfinite(saliency).all()
        assert 0.0 <= saliency.min() and saliency.max() <= 1.0
