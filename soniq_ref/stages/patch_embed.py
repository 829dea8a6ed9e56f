"""``patch_embed`` and ``patch_embed_cls``: pixels to float32 tokens.

uint8 pixels x [B, C, H, W] -> float32 tokens [B, T, D], in this order::

    rows = patch_rows(x, p)                        uint8 [B, (H/p)(W/p), C p p]
    e    = proj(rows)                              float32 [B, (H/p)(W/p), D]
    e    = prepend_token(e, token)                 ``patch_embed_cls``: T = (H/p)(W/p) + 1
    out  = add_positions(e, table)                 one float32 add, table [T, D]

``proj`` is a quantized linear map reading the pixels as 8-bit codes
(:class:`~.token_linear.TokenLinear`, ``s_a = 1/255``); ``patch_rows``,
``prepend_token`` and ``add_positions`` are the functions the training layers
(:mod:`soniq_ref.layers.tokens`) call. The stage reads the pixels, so it is the
first stage of a model.

In the file: ``patch`` (p), the object ``proj``, the tensors ``<i>.position.table``
(F32 [T, D]) and, for ``patch_embed_cls``, ``<i>.class_token.token`` (F32 [1, D]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layers.tokens import add_positions, patch_rows, prepend_token
from .base import check_size
from .layer_norm import finite_tensor
from .token_linear import TokenLinear
from .token_stage import TokenStage

TABLE, TOKEN = "position.table", "class_token.token"


@dataclass
class PatchEmbedStage(TokenStage):
    """proj (reads pixels), patch p, table float32 [T, D], token float32 [1, D] or None."""

    proj: TokenLinear
    patch: int
    table: np.ndarray
    token: np.ndarray | None = None

    KINDS = ("patch_embed", "patch_embed_cls")
    gives_tokens = True

    @property
    def kind(self) -> str:
        return self.KINDS[self.token is not None]

    def named_maps(self) -> list:
        return [("proj", self.proj)]

    def output_shape(self, shape: tuple) -> tuple:
        c, h, w = (int(v) for v in shape)
        p = self.patch
        return ((h // p) * (w // p) + (self.token is not None), self.proj.out_features)

    def run(self, codes, run):
        e = self.proj.apply(patch_rows(codes, self.patch), run)
        if self.token is not None:
            e = prepend_token(e, self.token)
        return add_positions(e, self.table)

    def other_float32_values(self) -> int:
        return int(self.table.size) + (0 if self.token is None else int(self.token.size))

    def details(self) -> dict:
        return {"patch": int(self.patch), "class_token": self.token is not None}

    # ------------------------------------------------------------------ file

    @classmethod
    def file_keys(cls, kind: str, last: bool) -> set:
        return {"type", "patch", "proj"}

    @classmethod
    def file_tensors(cls, index: int, kind: str, last: bool) -> set:
        names = {f"{index}.{TABLE}"} | ({f"{index}.{TOKEN}"} if kind == cls.KINDS[1] else set())
        return names | TokenLinear.file_tensors(f"{index}.proj")

    def to_file(self, index: int, last: bool, tensors: dict) -> dict:
        tensors[f"{index}.{TABLE}"] = np.asarray(self.table, np.float32)
        if self.token is not None:
            tensors[f"{index}.{TOKEN}"] = np.asarray(self.token, np.float32)
        return {"type": self.kind, "patch": int(self.patch),
                "proj": self.proj.to_file(f"{index}.proj", tensors)}

    @classmethod
    def from_file(cls, entry) -> "PatchEmbedStage":
        shape = entry.shape
        if entry.index != 0 or len(shape) != 3:
            entry.fail(f"it reads the pixels [C, H, W]: it must be the first stage of a model "
                       f"with 3-D input, got stage {entry.index} reading {list(shape)}")
        if entry.last:
            entry.fail("it gives tokens, not logits: it cannot end the model")
        c, h, w = shape
        patch = entry.int("patch", 1)
        if h % patch or w % patch:
            entry.fail(f"patch {patch} does not divide the image's H = {h} and W = {w}")
        proj = TokenLinear.from_file(entry, "proj", check_size((c, patch, patch),
                                                               f"{entry.where} patch"), "pixels")
        dim = proj.out_features
        cls_token = entry.type == cls.KINDS[1]
        tokens = (h // patch) * (w // patch) + cls_token
        check_size((tokens, dim), f"{entry.where} tokens")
        table = finite_tensor(entry, TABLE, [tokens, dim])
        token = finite_tensor(entry, TOKEN, [1, dim]) if cls_token else None
        return cls(proj, patch, table, token)
