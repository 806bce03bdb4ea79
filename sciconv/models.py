"""Build MONAI networks from config, check input sizes, and tabulate their layers (shapes, receptive field, parameters).

A model is described by a plain dict of arguments (`model_args`) saved in every
checkpoint, so a checkpoint rebuilds its network without the config that made it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sciconv.errors import ModelConfigError  # noqa: F401 - raised here; defined where the CLI catches it cheaply


def _norm(name: str):
    return None if name == "none" else name


from sciconv.networks import SEGMENTERS, check_input_size, downsampling_factor, is_segmenter  # noqa: F401,E402 - part of this module's interface

RESNET_LAYERS = {"resnet10": [1, 1, 1, 1], "resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}


def model_args(model_cfg: dict, spatial_dims: int, in_channels: int, out_channels: int,
               input_size: list[int] | tuple[int, ...] | None = None) -> dict:
    """Everything needed to rebuild the network, as plain data (saved in every checkpoint). input_size
    is the spatial size of the inputs, which a network with a flattening head (convnet) is built for."""
    return {"spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": out_channels,
            **{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in model_cfg.items()},
            "input_size": [int(n) for n in input_size] if input_size is not None else None}


def build_classifier(args: dict) -> nn.Module:
    """A MONAI image-level network with `out_channels` outputs (class logits or regression targets), from scratch.

    `pooling: max` swaps the global average pooling before the head for global max pooling:
    a lesion a few pixels wide is one feature-map cell among hundreds, and averaging dilutes
    its evidence by that factor, while the maximum keeps it (the multiple-instance view of
    weakly supervised detection).
    """
    net = _classifier(args)
    if args.get("pooling", "avg") == "max" and args["name"] != "convnet":  # convnet flattens, it never pools
        pool = nn.AdaptiveMaxPool3d(1) if args["spatial_dims"] == 3 else nn.AdaptiveMaxPool2d(1)
        for owner, attribute in ((getattr(net, "class_layers", None), "pool"), (net, "avgpool"), (net, "_avg_pooling")):
            if owner is not None and hasattr(owner, attribute):
                setattr(owner, attribute, pool)
                break
        else:
            raise ModelConfigError(f"model.pooling max is not available for {args['name']}")
    return net


def _classifier(args: dict) -> nn.Module:
    from monai.networks.nets import Classifier, DenseNet, DenseNet121, EfficientNetBN, ResNet

    name, dims, cin, cout = args["name"], args["spatial_dims"], args["in_channels"], args["out_channels"]
    if name == "convnet":
        # MONAI's Classifier: strided convolutions, then a linear layer over the flattened features, so
        # where along the signal a feature sits still matters (a spectrum's energy axis); the MNIST-1D
        # paper's CNN. It is built for one input size, which sciconv takes from the training data.
        if not args.get("input_size"):
            raise ModelConfigError("model.name convnet is built for one input size, and none was given")
        if len(args["strides"]) != len(args["channels"]):
            raise ModelConfigError(f"model.strides needs one entry per convolution of model.channels "
                                   f"({len(args['channels'])}) for convnet, got {len(args['strides'])}")
        return Classifier((cin, *args["input_size"]), cout, channels=args["channels"], strides=args["strides"],
                          kernel_size=args["kernel_size"], num_res_units=args["num_res_units"], act="relu",
                          norm=_norm(args["norm"]), dropout=args["dropout"] or None)
    if name == "densenet121":
        return DenseNet121(spatial_dims=dims, in_channels=cin, out_channels=cout, dropout_prob=args["dropout"])
    if name == "densenet":
        return DenseNet(spatial_dims=dims, in_channels=cin, out_channels=cout, init_features=args["init_features"],
                        growth_rate=args["growth_rate"], block_config=tuple(args["block_config"]),
                        dropout_prob=args["dropout"])
    if name in RESNET_LAYERS:
        # widths scale MONAI's default (64, 128, 256, 512) planes; a 7-wide first kernel as in the paper
        planes = [int(p * args["width_factor"]) for p in (64, 128, 256, 512)]
        return ResNet("basic", RESNET_LAYERS[name], planes, spatial_dims=dims, n_input_channels=cin,
                      num_classes=cout)
    if name.startswith("efficientnet-"):
        # pretrained=False: no hub weights can be fetched here; transfer learning goes through init_from
        # (its dropout rate is fixed by the variant's own coefficients)
        return EfficientNetBN(name, pretrained=False, spatial_dims=dims, in_channels=cin, num_classes=cout)
    raise ModelConfigError(f"model.name {name!r} is not built in")


def build(args: dict) -> nn.Module:
    from monai.networks.nets import BasicUNet, SegResNet, UNet

    if not is_segmenter(args["name"]):
        return build_classifier(args)
    if args["name"] == "unet":
        if len(args["strides"]) != len(args["channels"]) - 1:
            raise ModelConfigError(
                f"model.strides needs len(model.channels) - 1 = {len(args['channels']) - 1} entries, "
                f"got {len(args['strides'])}: one downsampling step between consecutive levels")
        return UNet(spatial_dims=args["spatial_dims"], in_channels=args["in_channels"],
                    out_channels=args["out_channels"], channels=args["channels"], strides=args["strides"],
                    num_res_units=args["num_res_units"], dropout=args["dropout"], norm=_norm(args["norm"]))
    if args["name"] == "basic_unet":
        if len(args["channels"]) != 6:
            raise ModelConfigError(f"model.channels for basic_unet needs 6 feature sizes, got {len(args['channels'])}")
        return BasicUNet(spatial_dims=args["spatial_dims"], in_channels=args["in_channels"],
                         out_channels=args["out_channels"], features=args["channels"], dropout=args["dropout"],
                         norm=_norm(args["norm"]))
    if args["name"] == "segresnet":
        # Myronenko 2018 (BraTS 2018 winner): residual encoder, light decoder of one block per level
        levels = len(args["blocks_down"])
        return SegResNet(spatial_dims=args["spatial_dims"], in_channels=args["in_channels"],
                         out_channels=args["out_channels"], init_filters=args["channels"][0],
                         blocks_down=tuple(args["blocks_down"]), blocks_up=(1,) * (levels - 1),
                         dropout_prob=args["dropout"] or None, norm=_norm(args["norm"]) or "instance")
    raise ModelConfigError(f"model.name {args['name']!r} is not built in")


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple
    parameters: int
    receptive_field: int


def layer_table(net: nn.Module, input_shape: tuple[int, ...]) -> tuple[list[LayerRow], int, int]:
    """Per-layer output shapes (from a forward pass) and the receptive field along the longest path.

    The receptive field follows the convolutions in the order they run, which
    for an encoder-decoder is the deepest path: r += (k - 1) * d * j, then j *= s, for
    a convolution; for a transposed one j /= s first, then r += (k - 1) * d * j (its kernel
    spans k pixels of the finer output grid).
    Residual shortcuts run in parallel with the main path and are skipped.
    """
    rows: list[LayerRow] = []
    state = {"rf": 1.0, "jump": 1.0}
    hooks = []

    def hook(name):
        # A residual shortcut runs beside the main convolution, not after it: it does not widen the field.
        on_main_path = not name.split(".")[-1] in ("residual", "shortcut", "skip")

        def record(module, _inputs, output):
            if not on_main_path:
                pass
            elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                                   nn.ConvTranspose3d)):
                k, s, d = module.kernel_size[0], module.stride[0], module.dilation[0]
                if module.transposed:
                    # its kernel taps the upsampled grid: the output spacing (jump / s) sets the widening
                    state["jump"] /= s
                    state["rf"] += (k - 1) * d * state["jump"]
                else:
                    state["rf"] += (k - 1) * d * state["jump"]
                    state["jump"] *= s
            elif isinstance(module, (nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool2d, nn.AvgPool3d)):
                k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
                s = module.stride if isinstance(module.stride, int) else module.stride[0]
                state["rf"] += (k - 1) * state["jump"]
                state["jump"] *= s
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
            params = sum(p.numel() for p in module.parameters(recurse=False))
            rows.append(LayerRow(name, type(module).__name__, shape, params, int(state["rf"])))
        return record

    for name, module in net.named_modules():
        if not list(module.children()):
            hooks.append(module.register_forward_hook(hook(name)))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(input_shape, device=next(net.parameters()).device))
    finally:
        for handle in hooks:
            handle.remove()
        net.train(was_training)
    total = sum(p.numel() for p in net.parameters())
    return rows, int(state["rf"]), total


def cam_target_layer(net: nn.Module, name: str) -> str:
    """The layer whose activations Grad-CAM weighs for an image-level network: its last spatial feature maps."""
    if name == "convnet":
        last = list(dict(net.net.named_children()))[-1]  # MONAI names its convolutions net.layer_<i>
        return f"net.{last}"
    if name.startswith("densenet"):
        return "class_layers.relu"  # norm5 + ReLU, just before global pooling
    if name in RESNET_LAYERS:
        return "layer4"
    if name.startswith("efficientnet-"):
        return "_conv_head"
    raise ModelConfigError(f"no Grad-CAM layer known for {name}; set explain.target_layer")


def output_head(net: nn.Module) -> str:
    """Name of the last linear layer: the part transfer learning replaces and encoder freezing leaves trainable."""
    linear = [name for name, module in net.named_modules() if isinstance(module, nn.Linear)]
    if not linear:
        raise ModelConfigError(f"{type(net).__name__} has no linear output layer")
    return linear[-1]


def last_conv_before_output(net: nn.Module, input_shape: tuple[int, ...]) -> str:
    """The last convolution that still computes features, not class maps: the usual Grad-CAM target.

    Layers whose outputs have as many channels as the network's output belong to the output head
    (MONAI's UNet builds its last up-sampling step with the class count already).
    """
    rows = [row for row in layer_table(net, input_shape)[0] if row.kind.startswith(("Conv", "ConvTranspose"))]
    head_channels = rows[-1].output_shape[1] if rows else None
    features = [row.name for row in rows if row.output_shape[1] != head_channels]
    if not features:
        raise ModelConfigError("no feature convolution found before the output; set explain.target_layer")
    return features[-1]
