"""ResidualBlock: two 3x3 quantized convolutions and a skip connection.

x [B, C, H, W] -> y [B, O, Ho, Wo], ``Ho = (H - 1) // stride + 1`` (likewise Wo)::

    main = BN2(conv2(ReLU(BN1(conv1(x)))))        conv1: 3x3, stride s, pad 1; conv2: 3x3, pad 1
    skip = x^                                      identity (C == O and s == 1)
         | BNp(proj(x))                            1x1 convolution, stride s, no padding
    y    = ReLU(main + skip)

``x^`` is the block's input *as conv1 reads it*, so that training sees the deploy
model's arithmetic (docs/semantics.md, "Residual blocks"):

``float``  ``x^ = x``;
``noise``  ``x^ = clip(x, 0, beta) + (beta / 2**b~) u``: conv1's noisy input, the same
           noise ``u`` (its input quantizer's ``noisy``);
``exact``  ``x^ = s_a * float32(k << (A - b))`` with ``k`` conv1's input codes: the value
           the codes stand for (its input quantizer's ``dequantized``); backward by the
           straight-through rule (``ste_backward``).

When conv1 reads pixels (a ``PixelInput``) that is ``x`` itself, or the pixel value
``k / 255`` in exact mode (:mod:`soniq_ref.layers.input_quantizers`).

The projection reads the block's input codes too, so it shares conv1's input
quantizer object (its clip ``beta``, precision ``theta_a`` and bits; ``input_source``
names conv1, and the bit budget and snapping count the shared input once), and in
noise mode it sees conv1's activation noise. Its gradients for the shared clip and
precision are added to conv1's.

Parameters (``params``): every child's under ``"conv1.*"``, ``"bn1.*"``, ``"conv2.*"``,
``"bn2.*"`` and, with a projection, ``"proj.*"`` (without the shared ``beta``,
``theta_a``) and ``"bnp.*"``. ``grads`` uses the same names.
"""

from __future__ import annotations

import numpy as np

from .. import noise
from .activations import ReLU
from .batchnorm import BatchNorm2d
from .module import Container
from .quant_conv import QuantConv2d
from .quant_layer import QuantLayer

SHARED_INPUT = ("beta", "theta_a")     # the projection's parameters that are conv1's


class ResidualBlock(Container):
    """conv1 -> BN1 -> ReLU -> conv2 -> BN2, plus the skip, then ReLU (see the module
    docstring). ``projection``: None for a 1x1 projection exactly when the shapes
    differ (``in_channels != out_channels`` or ``stride != 1``), or a bool to force it."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1,
                 projection=None, weight_palette=(1, 4), act_palette=(2, 8), seed=0,
                 first_layer: bool = False, dtype=np.float32, theta_init=0.0):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.stride = int(stride)
        if projection is None:
            projection = self.in_channels != self.out_channels or self.stride != 1
        elif not projection and (self.in_channels != self.out_channels or self.stride != 1):
            raise ValueError("a block without projection needs in_channels == out_channels "
                             "and stride 1 (the skip must have the output's shape)")
        seeds = [[int(v) for v in np.atleast_1d(seed)] + [j] for j in range(3)]
        kw = dict(weight_palette=weight_palette, act_palette=act_palette, dtype=dtype,
                  theta_init=theta_init)
        self.conv1 = QuantConv2d(in_channels, out_channels, 3, stride=stride, padding=1,
                                 first_layer=first_layer, seed=seeds[0], **kw)
        self.bn1 = BatchNorm2d(out_channels, dtype=dtype)
        self.relu1 = ReLU()
        self.conv2 = QuantConv2d(out_channels, out_channels, 3, padding=1, seed=seeds[1], **kw)
        self.bn2 = BatchNorm2d(out_channels, dtype=dtype)
        self.relu_out = ReLU()
        self.proj = self.bnp = None
        if projection:
            self.proj = QuantConv2d(in_channels, out_channels, 1, stride=stride, padding=0,
                                    first_layer=first_layer, seed=seeds[2], **kw)
            self.bnp = BatchNorm2d(out_channels, dtype=dtype)
            self.proj.input_quantizer = self.conv1.input_quantizer
            for name in SHARED_INPUT:
                if name in self.conv1.params:
                    self.proj.params[name] = self.conv1.params[name]
            self.proj.input_source = self.conv1
        self.collect_params()
        self._cache = None

    # ---------------------------------------------------------------- structure

    def named_layers(self) -> list:
        """(name, layer) of the children that hold parameters or statistics, in order."""
        names = [("conv1", self.conv1), ("bn1", self.bn1), ("conv2", self.conv2),
                 ("bn2", self.bn2)]
        return names + ([("proj", self.proj), ("bnp", self.bnp)] if self.proj else [])

    def quant_layers(self) -> list[QuantLayer]:
        """conv1, conv2 and the projection (if any), in that order."""
        return [self.conv1, self.conv2] + ([self.proj] if self.proj else [])

    def _shared(self, layer, name: str) -> bool:
        return layer is self.proj and name in SHARED_INPUT

    # ---------------------------------------------------------------- forward / backward

    def forward(self, x: np.ndarray) -> np.ndarray:
        main = self.bn2.forward(self.conv2.forward(
            self.relu1.forward(self.bn1.forward(self.conv1.forward(x)))))
        if self.proj is not None:
            skip = self.bnp.forward(self._proj_forward(x))
        else:
            skip = self._skip_value(x)
        return self.relu_out.forward(main + skip)

    def _proj_forward(self, x):
        """The projection, fed conv1's activation noise in noise mode."""
        proj = self.proj
        if proj.mode != "noise" or self.conv1.first_layer or proj.fixed_noise is not None:
            return proj.forward(x)
        u_w = noise.uniform_noise(proj.noise_rng, proj.params["weight"].shape, proj.dtype)
        proj.fixed_noise = (u_w, self.conv1.last_noise[1])
        try:
            return proj.forward(x)
        finally:
            proj.fixed_noise = None

    def _skip_value(self, x):
        """x^: the block's input as conv1 reads it (see the module docstring)."""
        c1, quantizer = self.conv1, self.conv1.input_quantizer
        if c1.mode == "float":
            self._cache = ("float", None)
            return x
        if c1.mode == "noise":
            x_t, cache = quantizer.noisy(x, c1.last_noise[1])
            self._cache = ("noise", cache)
            return x_t
        x_hat = quantizer.dequantized(quantizer.codes(x), x.dtype)
        self._cache = ("exact", (x, x_hat))
        return x_hat

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = self.relu_out.backward(dy)
        d_main = self.bn1.backward(self.relu1.backward(
            self.conv2.backward(self.bn2.backward(dy))))
        dx = self.conv1.backward(d_main)
        extra = {}
        if self.proj is not None:
            dx = dx + self.proj.backward(self.bnp.backward(dy))
            extra = {k: self.proj.grads[k] for k in SHARED_INPUT if k in self.proj.grads}
        else:
            d_skip, extra = self._skip_backward(dy)
            dx = dx + d_skip
        grads = dict(self.conv1.grads)
        for name, g in extra.items():
            grads[name] = (grads[name] + g).astype(self.conv1.dtype)
        self.conv1.grads = grads
        return dx

    def _skip_backward(self, dy):
        """-> (d x from the skip, gradients for conv1's shared input parameters)."""
        kind, cache = self._cache
        quantizer = self.conv1.input_quantizer
        if kind == "float":
            return dy, {}
        if kind == "noise":
            return quantizer.noisy_backward(dy, cache)
        return quantizer.ste_backward(dy, *cache)
