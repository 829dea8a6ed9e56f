"""A small random CNN with random palettes, per-channel bits and batch norm statistics,
exported as a DeployModel: end-to-end fixtures for the backend tests."""

import numpy as np


def random_cnn_deploy(seed: int, shape: tuple, classes: int, channels: tuple,
                      act_palette: tuple, batch: int):
    """(DeployModel, uint8 inputs [batch, *shape]) of a random CNN in exact mode."""
    from soniq_ref.deploy import DeployModel
    from soniq_ref.layers.batchnorm import BatchNorm2d
    from soniq_ref.models import cnn

    rng = np.random.default_rng(seed)
    net = cnn(shape, classes, channels=channels, weight_palette=(1, 4),
              act_palette=act_palette, seed=seed)
    x = rng.integers(0, 256, (batch,) + shape).astype(np.uint8)
    net.set_mode("noise")
    net.eval()
    net.forward(x.astype(np.float32) / np.float32(255))     # initialises the clips
    for layer in net.layers:
        if isinstance(layer, BatchNorm2d):
            layer.running_mean[...] = rng.standard_normal(layer.channels)
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.channels)
        if hasattr(layer, "set_bits"):
            w_bits = rng.choice(layer.weight_palette, layer.params["weight"].shape[0])
            a_bits = None if layer.first_layer else \
                rng.choice(layer.act_palette, layer.params["theta_a"].shape[0]).astype(np.uint8)
            layer.set_bits(w_bits.astype(np.uint8), a_bits)
    net.set_mode("exact")
    return DeployModel.from_model(net, shape), x


def random_resnet_deploy(seed: int, shape: tuple, classes: int, *, width: int, depth: int = 8,
                         weight_palette=(1, 4), act_palette=(2, 8), batch: int = 4):
    """(DeployModel, uint8 inputs) of a random ResNet in exact mode: random batch-norm
    statistics and per-channel bits on both branches of every block (the projections take
    their block's input bits)."""
    from soniq_ref.deploy import DeployModel
    from soniq_ref.layers.batchnorm import BatchNorm2d
    from soniq_ref.models import resnet

    rng = np.random.default_rng(seed)
    net = resnet(shape, classes, depth=depth, width=width, weight_palette=weight_palette,
                 act_palette=act_palette, seed=seed)
    x = rng.integers(0, 256, (batch,) + shape).astype(np.uint8)
    net.set_mode("noise")
    net.eval()
    net.forward(x.astype(np.float32) / np.float32(255))     # initialises the clips
    for _, layer in net.named_layers():
        if isinstance(layer, BatchNorm2d):
            layer.running_mean[...] = 0.3 * rng.standard_normal(layer.channels)
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.channels)
    for layer in net.quant_layers():
        w_bits = rng.choice(layer.weight_palette, layer.params["weight"].shape[0])
        source = getattr(layer, "input_source", None)
        a_bits = None if layer.first_layer else source.a_bits if source is not None else \
            rng.choice(layer.act_palette, layer.params["theta_a"].shape[0]).astype(np.uint8)
        layer.set_bits(w_bits.astype(np.uint8), a_bits)
    net.set_mode("exact")
    return DeployModel.from_model(net, shape), x


def random_vit(seed: int, pool: str = "mean", activation: str = "relu", shape=(1, 8, 8),
               classes: int = 3, dim: int = 8, heads: int = 2, depth: int = 2,
               act_palette=(2, 6), batch: int = 5):
    """(the ViT Sequential in exact mode, uint8 inputs [batch, *shape]): clips from one
    noise forward, random bits from the palettes, LayerNorms, the position table and
    the class token moved off their initial values."""
    from soniq_ref.models import vit

    rng = np.random.default_rng(seed)
    net = vit(shape, classes, dim=dim, heads=heads, depth=depth, pool=pool,
              activation=activation, act_palette=act_palette, seed=seed)
    x = rng.integers(0, 256, (batch,) + tuple(shape)).astype(np.uint8)
    net.set_mode("noise")
    net.forward(x.astype(np.float32) / np.float32(255))     # initialises the clips
    norms = {f"{name}.weight" for name, layer in net.named_layers()
             if type(layer).__name__ == "LayerNorm"}
    for name, p in net.params.items():
        if name.endswith(("table", "token", "bias")) or name in norms:
            p[...] += (0.3 * rng.standard_normal(p.shape)).astype(p.dtype)
    for layer in net.quant_layers():
        w_bits = rng.choice(layer.weight_palette, layer.params["weight"].shape[0])
        a_bits = None if layer.first_layer else \
            rng.choice(layer.act_palette, layer.params["theta_a"].shape[0]).astype(np.uint8)
        layer.set_bits(w_bits.astype(np.uint8), a_bits)
    net.set_mode("exact")
    net.eval()
    return net, x
