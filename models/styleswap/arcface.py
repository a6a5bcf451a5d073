"""Identity recogniser F_id of the paper's identity and InfoNCE losses (arXiv 2312.10843, Sec. 3.3).

The paper uses ArcFace (Deng et al., CVPR 2019) for F_id. The public weights that the StyleGAN-encoder
world trains with are pSp's ``model_ir_se50.pth``: the IR-SE50 ArcFace of TreB1eN/InsightFace_Pytorch
(MIT), used by pSp's ``criteria/id_loss.py``. :class:`ArcFaceIRSE50` is that network with pSp's
state-dict keys (``models/encoders/model_irse.py: Backbone(112, 50, mode='ir_se')``):

* ``input_layer.{0,1,2}``: Conv3x3(3->64, no bias), BatchNorm2d, PReLU;
* ``body.0..23``: the 24 IR-SE units, built with :func:`models.styleswap.encoder.ir_se50_units` and
  :class:`models.styleswap.encoder.BottleneckIRSE` (the same backbone code as the style encoder);
* ``output_layer``: ``0`` BatchNorm2d(512), ``1`` Dropout, ``2`` Flatten, ``3`` Linear(512*7*7, 512),
  ``4`` BatchNorm1d(512, affine=False) (running statistics only);
* the output is L2-normalised (pSp ``l2_norm``).

Input (pSp ``IDLoss.extract_feats``): a 256 px aligned face in -1..1 is cropped to rows 35:223 and
columns 32:220 (188 x 188) and average-pooled to 112 x 112. Other sizes use the same box scaled by
H/256 and W/256 (rounded), which is pSp's box exactly at 256 px.

:class:`IdentityModel` is the interface the losses use (``embed(img) -> unit [B, D]``), so tests and
experiments can plug in a small network. No ComfyUI import here.
"""
from __future__ import annotations

import os
from typing import Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..safe_load import load_torch_file
from .encoder import BottleneckIRSE, ir_se50_units, state_dict_mismatch

CHECKPOINT_FOLDER = "models/swapforge/arcface"
CHECKPOINT_NAME = "model_ir_se50.pth"
#: pSp's crop of a 256 px face: rows 35:223, columns 32:220 (id_loss.py), then pooled to 112.
CROP_256 = (35, 223, 32, 220)
ARCFACE_SIZE = 112


class IdentityModel(nn.Module):
    """Interface of F_id: ``embed(img [B, 3, H, W] in -1..1) -> [B, D]`` unit-length embeddings.

    Subclasses implement :meth:`embed`; ``forward`` calls it. The losses only call ``embed`` and
    compare embeddings by their dot product (= cosine, since they are unit vectors)."""

    def embed(self, img: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.embed(img)


def crop_and_pool(img: torch.Tensor, out_size: int = ARCFACE_SIZE) -> torch.Tensor:
    """pSp's ArcFace input: img [B, C, H, W] -> [B, C, out_size, out_size].

    Crops rows round(35*H/256):round(223*H/256) and columns round(32*W/256):round(220*W/256)
    (exactly [35:223, 32:220] at 256 px) and applies AdaptiveAvgPool2d(out_size)."""
    if img.ndim != 4:
        raise ValueError(f"SwapForge ArcFace: expected images [B, 3, H, W], got {tuple(img.shape)}.")
    h, w = img.shape[-2:]
    t, b, l, r = CROP_256
    t, b = int(round(t * h / 256)), int(round(b * h / 256))
    l, r = int(round(l * w / 256)), int(round(r * w / 256))
    return F.adaptive_avg_pool2d(img[:, :, t:b, l:r], out_size)


class Flatten(nn.Module):
    """[B, C, H, W] -> [B, C*H*W] (pSp ``helpers.Flatten``; no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


class ArcFaceIRSE50(IdentityModel):
    """pSp's ArcFace IR-SE50 (``Backbone(input_size=112, num_layers=50, mode='ir_se')``).

    Args:
        channels: first stage width (64 for the released weights; smaller only for tests).
        embedding_dim: output size (512).
        drop_ratio: dropout before the linear layer (pSp's id loss builds it with 0.6; inactive in
            eval mode, which is how the recogniser is used).

    embed(img [B, 3, H, W] in -1..1, any H, W >= 64) -> [B, embedding_dim] unit vectors, after
    :func:`crop_and_pool`. ``features(x112)`` runs the network on an already cropped 112 px input.
    """

    def __init__(self, channels: int = 64, embedding_dim: int = 512, drop_ratio: float = 0.6):
        super().__init__()
        top = 8 * channels
        self.input_layer = nn.Sequential(nn.Conv2d(3, channels, (3, 3), 1, 1, bias=False),
                                         nn.BatchNorm2d(channels), nn.PReLU(channels))
        self.body = nn.Sequential(*[BottleneckIRSE(i, d, s) for i, d, s in ir_se50_units(channels)])
        self.output_layer = nn.Sequential(nn.BatchNorm2d(top), nn.Dropout(drop_ratio), Flatten(),
                                          nn.Linear(top * 7 * 7, embedding_dim),
                                          nn.BatchNorm1d(embedding_dim, affine=False))

    def features(self, x112: torch.Tensor) -> torch.Tensor:
        x = self.output_layer(self.body(self.input_layer(x112)))
        return F.normalize(x, dim=1)

    def embed(self, img: torch.Tensor) -> torch.Tensor:
        return self.features(crop_and_pool(img))


def missing_checkpoint_message(path: str) -> str:
    return (f"SwapForge: no ArcFace weights at {path}. Expected {CHECKPOINT_NAME} (IR-SE50 ArcFace, about "
            f"175 MB, from the pSp / TreB1eN InsightFace_Pytorch release, MIT licence) in "
            f"{CHECKPOINT_FOLDER}. Put the file there and start again.")


def load_arcface(path_or_state) -> ArcFaceIRSE50:
    """Load ``model_ir_se50.pth`` (a bare state dict, pSp's format) strictly -> ArcFaceIRSE50 in eval
    mode on CPU with gradients off. ``num_batches_tracked`` buffers may be absent (files saved by old
    PyTorch); every other key must match in name and shape.

    Raises FileNotFoundError (message names the file, folder, source and licence) or ValueError."""
    if isinstance(path_or_state, Mapping):
        state = path_or_state
    else:
        path = os.fspath(path_or_state)
        if not os.path.isfile(path):
            raise FileNotFoundError(missing_checkpoint_message(path))
        try:
            state = load_torch_file(path)
        except Exception as exc:
            raise ValueError(f"SwapForge: could not read {path} as ArcFace weights: {exc}. Expected pSp's "
                             f"{CHECKPOINT_NAME}; re-download it if it may be truncated.") from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    first = state.get("input_layer.0.weight")
    channels = int(first.shape[0]) if first is not None else 64
    model = ArcFaceIRSE50(channels=channels)
    expected = model.state_dict()
    parts = state_dict_mismatch(expected, state, limit=8)
    if parts:
        raise ValueError(f"SwapForge: these weights are not pSp's IR-SE50 ArcFace: {'; '.join(parts)}. "
                         f"Use an unmodified {CHECKPOINT_NAME}.")
    full = dict(state)
    for k, v in expected.items():
        if k not in full:  # num_batches_tracked of old files
            full[k] = v
    model.load_state_dict(full, strict=True)
    model.eval().requires_grad_(False)
    return model


def arcface_key_shapes(channels: int = 64) -> Tuple[Tuple[str, Tuple[int, ...]], ...]:
    """(key, shape) of every state-dict entry, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = ArcFaceIRSE50(channels=channels)
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


class TinyIdentityNet(IdentityModel):
    """A small random CNN with the :class:`IdentityModel` interface, for tests and ``--tiny`` smoke runs
    only (it recognises nobody): crop_and_pool to ``input_size``, three stride-2 Conv3x3 + LeakyReLU,
    global average pool, Linear to ``embedding_dim``, L2 normalisation."""

    def __init__(self, channels: int = 16, embedding_dim: int = 64, input_size: int = 32):
        super().__init__()
        self.input_size = int(input_size)
        c = channels
        self.net = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(c, 2 * c, 3, 2, 1),
                                 nn.LeakyReLU(0.2), nn.Conv2d(2 * c, 4 * c, 3, 2, 1), nn.LeakyReLU(0.2),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * c, embedding_dim))

    def embed(self, img: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(crop_and_pool(img, self.input_size)), dim=1)
