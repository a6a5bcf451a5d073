"""Style Blending Module (SBM) of "High-Fidelity Face Swapping with Style Blending" (arXiv 2312.10843).

The paper (Sec. 3.2) blends the source's and the target's style codes Ws, Wt in R^{18 x 512}: linear
layers give queries, keys and values from Ws and from Wt, and four layers of multi-head cross-attention
compute

    A^t = softmax(q_s k_t^T / sqrt(d)) v_t,      A^s = softmax(q_t k_s^T / sqrt(d)) v_s,

then, per style element (eq. 2),

    A_w^t = e^{A^t} / (e^{A^s} + e^{A^t}) = sigmoid(A^t - A^s),    A_w^s = 1 - A_w^t,
    W' = A_w^t * Wt + A_w^s * Ws                                    (element-wise).

The sigmoid form is the same number and cannot overflow (the exponential form gives inf/inf = NaN for
|A| around 100 in float32). No code or weights were released; the choices the paper leaves open are:

* Projections per stream (default ``shared_qkv=False``): Ws gets its own to_q/to_k/to_v and Wt its own.
  The paper's sentence ("from Ws and Wt, three linear layers ... give queries, keys and values") also
  reads as one shared set; that is ``shared_qkv=True``, but then the whole module is symmetric:
  swapping Ws and Wt swaps A^t and A^s, so A_w^t becomes 1 - A_w^t and W' is unchanged. The module
  could not tell which face gives the identity, so the asymmetric form is the default.
* d in sqrt(d) is the per-head size dim / n_heads (standard multi-head attention; equal to dim for
  one head). Heads are concatenated; there is no output projection, so A^t, A^s are value vectors in
  the 512-d style space, compared element-wise by eq. 2.
* Stacking: layer l takes the two streams (s^l, t^l), with (s^1, t^1) = (Ws, Wt), and gives
  (A^t_l, A^s_l). Between layers, each query stream keeps what it read, as in a transformer
  cross-attention block: s^{l+1} = LN(s^l + A^t_l), t^{l+1} = LN(t^l + A^s_l). The last layer's A^t, A^s
  enter eq. 2 directly. Each layer has its own projections (and LayerNorms, per stream unless shared).
  With ``n_layers=1`` the module is exactly the paper's two formulas and eq. 2.
* Starting point (``blend_prior=True``, what :class:`~models.styleswap.swapper.Swapper` uses): an untrained
  SBM should already swap, but its attention cannot give each style element its own weight: nothing in it
  says which of the n_styles rows a code is (no positional term), and a value projection that ignores its
  input gives every row the same value. So the module gets one learnable per-element prior beta
  [n_styles, dim] inside eq. 2's sigmoid, A_w^t = sigmoid(A^t - A^s + beta) (beta = 0 is eq. 2 exactly), and
  :meth:`StyleBlendingModule.init_layerwise_blend` sets the last layer's value projections to zero (so
  A^t = A^s = 0 for any codes) and beta to +/- ``margin`` per row: the target's coarse styles (pose), the
  source's middle styles (identity), the target's fine styles (colour, light), see :func:`layerwise_rows`.
  With margin 14 every weight is within 1e-6 of 0 or 1, so the untrained module is that layer-wise blend to
  float32 precision, while its gradient (sigmoid' = 8e-7 times the upstream one) is not zero: Adam's
  scale-free steps move it from there.

No ComfyUI import here.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn

SOURCE_RGB = (0.10, 0.35, 1.00)  # weights_image colour of A_w^t = 0 (element taken from Ws)
TARGET_RGB = (1.00, 0.45, 0.05)  # weights_image colour of A_w^t = 1 (element taken from Wt)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Multi-head softmax(q k^T / sqrt(d)) v with d = dim / n_heads; q [B, N, dim], k, v [B, M, dim]
    -> [B, N, dim] (heads split along dim in order and concatenated back)."""
    b, n, dim = q.shape
    m = k.shape[1]
    d = dim // n_heads
    qh = q.reshape(b, n, n_heads, d).transpose(1, 2)
    kh = k.reshape(b, m, n_heads, d).transpose(1, 2)
    vh = v.reshape(b, m, n_heads, d).transpose(1, 2)
    p = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1)
    return (p @ vh).transpose(1, 2).reshape(b, n, dim)


class CrossAttentionLayer(nn.Module):
    """One SBM layer: (s, t) -> (A^t, A^s) with A^t = softmax(q_s k_t^T/sqrt d) v_t and
    A^s = softmax(q_t k_s^T/sqrt d) v_s. ``to_q[0]`` etc. project the source stream and ``to_q[1]`` the
    target stream; with ``shared=True`` each list holds one Linear used for both."""

    def __init__(self, dim: int, n_heads: int, shared: bool = False):
        super().__init__()
        n = 1 if shared else 2
        self.n_heads = n_heads
        self.to_q = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n))
        self.to_k = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n))
        self.to_v = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n))

    def _qkv(self, x: torch.Tensor, stream: int):
        i = min(stream, len(self.to_q) - 1)
        return self.to_q[i](x), self.to_k[i](x), self.to_v[i](x)

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        q_s, k_s, v_s = self._qkv(s, 0)
        q_t, k_t, v_t = self._qkv(t, 1)
        a_t = attention(q_s, k_t, v_t, self.n_heads)
        a_s = attention(q_t, k_s, v_s, self.n_heads)
        return a_t, a_s


def blend_weights(a_t: torch.Tensor, a_s: torch.Tensor) -> torch.Tensor:
    """Eq. 2: A_w^t = e^{A^t} / (e^{A^s} + e^{A^t}), computed as sigmoid(A^t - A^s) (finite for any
    finite A)."""
    return torch.sigmoid(a_t - a_s)


#: StyleGAN2's W+ rows by what they control (Karras et al. 2019, sec. 3.1): 4-8 px (rows 0-3) coarse: pose,
#: face shape; 16-32 px (rows 4-7) middle: facial features, i.e. identity; 64 px and up (rows 8-) fine:
#: colour scheme, light, microstructure.
COARSE_ROWS = range(0, 4)
MIDDLE_ROWS = range(4, 8)


def layerwise_rows(n_styles: int) -> torch.Tensor:
    """Bool [n_styles]: True where the layer-wise blend takes the TARGET's style (coarse rows 0-3 and fine rows
    8-), False where it takes the SOURCE's (middle rows 4-7, the identity)."""
    take_target = torch.ones(int(n_styles), dtype=torch.bool)
    take_target[[r for r in MIDDLE_ROWS if r < n_styles]] = False
    return take_target


class StyleBlendingModule(nn.Module):
    """The paper's SBM (Sec. 3.2, eq. 2); see the module docstring for the choices the paper leaves open.

    forward(ws [B, n_styles, dim], wt [B, n_styles, dim], strength in 0..1)
        -> (w [B, n_styles, dim], a_w_t [B, n_styles, dim])
    where W' = A_w^t * Wt + (1 - A_w^t) * Ws (eq. 2; with blend_prior, A_w^t = sigmoid(A^t - A^s + beta)) and
    w = W' + strength * (Wt - W') (computed with
    torch.lerp, so strength 0 gives W' and strength 1 gives Wt bit for bit). ``strength`` is a user
    control, not in the paper: it keeps more of the target where the blend looks off.
    """

    def __init__(self, dim: int = 512, n_styles: int = 18, n_layers: int = 4, n_heads: int = 8,
                 shared_qkv: bool = False, blend_prior: bool = False):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"SwapForge SBM: dim {dim} must be divisible by n_heads {n_heads}.")
        if n_layers < 1:
            raise ValueError(f"SwapForge SBM: n_layers must be at least 1, got {n_layers}.")
        self.dim, self.n_styles, self.n_layers, self.n_heads = dim, n_styles, n_layers, n_heads
        self.shared_qkv = shared_qkv
        self.layers = nn.ModuleList(CrossAttentionLayer(dim, n_heads, shared_qkv) for _ in range(n_layers))
        n = 1 if shared_qkv else 2
        self.norms = nn.ModuleList(nn.ModuleList(nn.LayerNorm(dim) for _ in range(n))
                                   for _ in range(n_layers - 1))
        # beta of A_w^t = sigmoid(A^t - A^s + beta) (module docstring); absent = 0 = eq. 2 exactly
        self.blend_prior = nn.Parameter(torch.zeros(n_styles, dim)) if blend_prior else None

    @torch.no_grad()
    def init_layerwise_blend(self, margin: float = 14.0) -> "StyleBlendingModule":
        """Make the untrained module the layer-wise blend of :func:`layerwise_rows`: the last layer's value
        projections (weights and biases, both streams) zero, so A^t = A^s = 0 for any codes, and beta = +margin
        on the rows taken from the target, -margin on the rows taken from the source. Needs blend_prior."""
        if self.blend_prior is None:
            raise ValueError("SwapForge SBM: init_layerwise_blend needs the module built with blend_prior=True.")
        for lin in self.layers[-1].to_v:
            lin.weight.zero_()
            lin.bias.zero_()
        sign = layerwise_rows(self.n_styles).to(self.blend_prior.dtype) * 2 - 1
        self.blend_prior.copy_(float(margin) * sign[:, None].expand_as(self.blend_prior))
        return self

    def attend(self, ws: torch.Tensor, wt: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """All cross-attention layers -> the last layer's (A^t, A^s), each [B, n_styles, dim]."""
        s, t = ws, wt
        a_t = a_s = None
        for i, layer in enumerate(self.layers):
            a_t, a_s = layer(s, t)
            if i < self.n_layers - 1:
                norm_s, norm_t = self.norms[i][0], self.norms[i][-1]
                s, t = norm_s(s + a_t), norm_t(t + a_s)
        return a_t, a_s

    def forward(self, ws: torch.Tensor, wt: torch.Tensor,
                strength: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
        shape = (self.n_styles, self.dim)
        if ws.ndim != 3 or wt.shape != ws.shape or tuple(ws.shape[1:]) != shape:
            raise ValueError(f"SwapForge SBM: expected source and target codes [B, {shape[0]}, {shape[1]}] of "
                             f"the same shape, got {tuple(ws.shape)} and {tuple(wt.shape)}. Encode both faces "
                             f"with the same encoder.")
        strength = float(strength)
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"SwapForge SBM: strength must be in 0..1 (0 = the blend, 1 = the target's "
                             f"codes), got {strength}.")
        a_t, a_s = self.attend(ws, wt)
        if self.blend_prior is not None:
            a_t = a_t + self.blend_prior
        a_w_t = blend_weights(a_t, a_s)
        w_prime = a_w_t * wt + (1.0 - a_w_t) * ws  # eq. 2
        return torch.lerp(w_prime, wt, strength), a_w_t


def weights_image(a_w_t: torch.Tensor, row_px: int = 8) -> torch.Tensor:
    """Heat map of eq. 2's A_w^t [B, n_styles, dim] -> float32 image [B, n_styles*row_px, dim, 3] in 0..1.

    Row r (style element r, coarse at the top) is repeated ``row_px`` times; column c is channel c.
    Colour = (1 - a) * SOURCE_RGB + a * TARGET_RGB: blue where the blend takes Ws, orange where it
    takes Wt."""
    if a_w_t.ndim != 3:
        raise ValueError(f"SwapForge SBM: weights_image expects [B, n_styles, dim], got {tuple(a_w_t.shape)}.")
    if row_px < 1:
        raise ValueError(f"SwapForge SBM: row_px must be at least 1, got {row_px}.")
    a = a_w_t.detach().to("cpu", torch.float32).clamp(0.0, 1.0)
    a = a.repeat_interleave(int(row_px), dim=1)[..., None]
    lo = torch.tensor(SOURCE_RGB, dtype=torch.float32)
    hi = torch.tensor(TARGET_RGB, dtype=torch.float32)
    return ((1.0 - a) * lo + a * hi).clamp(0.0, 1.0)
