"""Training losses of "High-Fidelity Face Swapping with Style Blending" (arXiv 2312.10843, Sec. 3.3).

Convention: G(source, target) puts the source's identity onto the target's attributes (pose,
expression, lighting, background), as :class:`models.styleswap.swapper.Swapper` does; ``out`` is
G(Is, It). Images are [B, 3, H, W] in -1..1.

Normalisation of ||.||^2 (the paper does not state it): image terms use the mean over pixels and
channels (MSE), landmark terms the mean over landmarks and coordinates with coordinates divided by the
image size (so they are resolution independent); every term is then averaged over the batch. The
paper's weights (:data:`LOSS_WEIGHTS`) apply to these normalised terms.

Terms (paper name -> function):
* adversarial (hinge, multi-scale D): :func:`hinge_d`, :func:`hinge_g`
* L_id = 1 - cos(F_id(out), F_id(Is)): :func:`identity_loss`
* L_con, InfoNCE with tau = 0.07 as eq. 9 (positive in the numerator only): :func:`infonce_loss` /
  :func:`infonce_from_embeddings`
* L_rec = 0.5 ||out - It||^2 when Is = It: :func:`reconstruction_loss`
* L_lm = 0.5 ||F_lm(It) - F_lm(out)||^2: :func:`landmark_loss`
* L_swap, dual swap consistency: :func:`dual_swap_consistency`
* total: :func:`generator_loss`; curriculum P_pi: :func:`same_identity_probability`.
No ComfyUI import here.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

#: Paper weights: lambda_id 10, lambda_con 5, lambda_rec 1, lambda_lm 100, lambda_swap 1; the
#: adversarial term has weight 1.
LOSS_WEIGHTS = dict(id=10.0, con=5.0, rec=1.0, lm=100.0, swap=1.0, adv=1.0)
TAU = 0.07


def _as_list(logits) -> Sequence[torch.Tensor]:
    return list(logits) if isinstance(logits, (list, tuple)) else [logits]


def hinge_d(real_logits, fake_logits) -> torch.Tensor:
    """Discriminator hinge loss: mean(relu(1 - D(real))) + mean(relu(1 + D(fake))), averaged over the
    scales of a multi-scale discriminator (lists of logit maps; a single tensor is one scale)."""
    real, fake = _as_list(real_logits), _as_list(fake_logits)
    if len(real) != len(fake):
        raise ValueError(f"hinge_d: {len(real)} real and {len(fake)} fake scales.")
    terms = [F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean() for r, f in zip(real, fake)]
    return torch.stack(terms).mean()


def hinge_g(fake_logits) -> torch.Tensor:
    """Generator hinge (adversarial) loss: -mean(D(fake)), averaged over scales."""
    return torch.stack([-f.mean() for f in _as_list(fake_logits)]).mean()


def _embed(id_model, img: torch.Tensor) -> torch.Tensor:
    e = id_model.embed(img) if hasattr(id_model, "embed") else id_model(img)
    return F.normalize(e, dim=-1)


def identity_loss(id_model, out: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """L_id = mean over the batch of 1 - cos(F_id(out), F_id(Is)). F_id(Is) is a constant (detached):
    only the swapped face is pulled towards the source identity."""
    e_out = _embed(id_model, out)
    e_src = _embed(id_model, source).detach()
    return (1.0 - (e_out * e_src).sum(-1)).mean()


def infonce_from_embeddings(e_out: torch.Tensor, e_pos: torch.Tensor, e_neg: torch.Tensor, tau: float = TAU,
                            negative_mask: Optional[torch.Tensor] = None,
                            include_positive: bool = False) -> torch.Tensor:
    """L_con, paper eq. 9, on unit embeddings: for item i with S_p = cos(out_i, pos_i) and the negatives' S_k =
    cos(out_i, neg_ik) (the target's S_t and the other faces' S_n, k = 1..K, only where negative_mask[i, k]),

        loss_i = -log( exp(S_p / tau) / sum_k exp(S_k / tau) ) = logsumexp_k(S_k / tau) - S_p / tau,

    the positive in the numerator only, as eq. 9 writes its denominator exp(S_t) + sum_n exp(S_n). (The common
    InfoNCE of van den Oord et al. also puts the positive in the denominator, which bounds the loss below by 0;
    ``include_positive=True`` gives that form.) Eq. 9 has no denominator for an item without any negative: such
    items are left out of the batch mean (with include_positive they count as 0, log 1), and when no item has a
    negative the result is 0, still connected to e_out's graph.

    e_out, e_pos [B, D]; e_neg [B, K, D] (per item) or [K, D] (shared by all items);
    negative_mask [B, K] bool (None = all negatives used). Embeddings are normalised here."""
    e_out = F.normalize(e_out, dim=-1)
    e_pos = F.normalize(e_pos, dim=-1)
    e_neg = F.normalize(e_neg, dim=-1)
    pos = (e_out * e_pos).sum(-1, keepdim=True)  # [B, 1]
    if e_neg.ndim == 2:
        neg = e_out @ e_neg.t()  # [B, K]
    else:
        neg = torch.einsum("bd,bkd->bk", e_out, e_neg)
    if negative_mask is not None:
        neg = neg.masked_fill(~negative_mask.to(torch.bool), float("-inf"))
    if include_positive:
        return -torch.log_softmax(torch.cat([pos, neg], 1) / tau, dim=1)[:, 0].mean()
    has_neg = torch.isfinite(neg).any(1)
    if not bool(has_neg.any()):
        return e_out.sum() * 0.0
    lse = torch.logsumexp(neg[has_neg] / tau, dim=1)
    return (lse - pos[has_neg, 0] / tau).mean()


def infonce_loss(id_model, out: torch.Tensor, source: torch.Tensor, negatives: torch.Tensor, tau: float = TAU,
                 negative_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """L_con, the paper's identity InfoNCE (tau = 0.07): the positive of F_id(out_i) is F_id(Is_i), the
    negatives are other identities (the target It_i and other faces).

    negatives: images [B, K, 3, H, W] (K per item) or [K, 3, H, W] (shared by all items);
    negative_mask [B, K] marks which negatives to use (e.g. drop the target when Is = It).
    Source and negative embeddings are constants (detached). See :func:`infonce_from_embeddings`."""
    e_out = _embed(id_model, out)
    e_pos = _embed(id_model, source).detach()
    if negatives.ndim == 5:
        b, k = negatives.shape[:2]
        e_neg = _embed(id_model, negatives.reshape(b * k, *negatives.shape[2:])).reshape(b, k, -1)
    else:
        e_neg = _embed(id_model, negatives)
    return infonce_from_embeddings(e_out, e_pos, e_neg.detach(), tau, negative_mask)


def reconstruction_loss(out: torch.Tensor, target: torch.Tensor, same_mask: torch.Tensor) -> torch.Tensor:
    """L_rec = 0.5 * ||out - It||^2 on the items where the source is the target (same_mask[i] True):
    0.5 * (mean over those items of the per-item mean over channels and pixels of (out - It)^2).
    Zero (still connected to ``out``'s graph) when no item has Is = It."""
    mask = same_mask.to(device=out.device, dtype=out.dtype).reshape(-1)
    per_item = (out - target).pow(2).flatten(1).mean(1)
    return 0.5 * (per_item * mask).sum() / mask.sum().clamp(min=1.0)


def landmark_loss(lm_model, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_lm = 0.5 * ||F_lm(It) - F_lm(out)||^2: landmarks in pixels divided by the image size (W for x,
    H for y), squared differences averaged over landmarks, coordinates and batch. F_lm(It) is a
    constant (detached)."""
    h, w = out.shape[-2:]
    scale = out.new_tensor([w, h])
    p_out = lm_model(out) / scale
    p_tgt = (lm_model(target) / scale).detach()
    return 0.5 * (p_tgt - p_out).pow(2).mean()


def _image(result):
    return result[0] if isinstance(result, (tuple, list)) else result


def dual_swap_consistency(G: Callable, source: torch.Tensor, target: torch.Tensor,
                          out: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """L_swap = 0.5 * ||G(G(Is, It), Is) - Is||^2 + 0.5 * ||G(It, G(Is, It)) - It||^2.

    With G(source, target) = source identity on target attributes, out = G(Is, It) has Is's identity
    and It's attributes, so G(out, Is) (out's identity on Is's attributes) must give back Is, and
    G(It, out) (It's identity on out's attributes, i.e. It's) must give back It. ``out`` is reused when
    given (else computed); G may return an image or a tuple whose first element is the image.
    Returns (L_swap, {"swap_s": first term, "swap_t": second term}), MSE normalisation."""
    if out is None:
        out = _image(G(source, target))
    back_s = _image(G(out, source))
    back_t = _image(G(target, out))
    term_s = 0.5 * (back_s - source).pow(2).mean()
    term_t = 0.5 * (back_t - target).pow(2).mean()
    return term_s + term_t, {"swap_s": term_s, "swap_t": term_t}


def same_identity_probability(step: int, total_steps: int, start: float = 1.0, end: float = 0.0) -> float:
    """Curriculum P_pi of feeding Is = It: linear from ``start`` (1) at step 0 to ``end`` (0) at step
    ``total_steps`` and constant after: P = start + (end - start) * min(step / total_steps, 1).
    The paper says P goes from 1 to 0 over training without the schedule's shape; linear is our choice."""
    if total_steps <= 0:
        return float(end)
    t = min(max(step / float(total_steps), 0.0), 1.0)
    return float(start + (end - start) * t)


def generator_loss(*, out: torch.Tensor, source: torch.Tensor, target: torch.Tensor, same_mask: torch.Tensor,
                   fake_logits=None, id_model=None, lm_model=None, G: Optional[Callable] = None,
                   e_neg: Optional[torch.Tensor] = None, negative_mask: Optional[torch.Tensor] = None,
                   weights: Optional[Mapping[str, float]] = None, tau: float = TAU
                   ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Weighted sum of the generator's terms -> (total, {term name: unweighted value}).

    total = adv * hinge_g + id * L_id + con * L_con + rec * L_rec + lm * L_lm + swap * L_swap, with
    ``weights`` defaulting to :data:`LOSS_WEIGHTS`. A term is skipped (absent from the dict) when its
    weight is 0 or its input is missing: adversarial without ``fake_logits``, identity and InfoNCE
    without ``id_model``, InfoNCE also without negatives ``e_neg`` (embeddings [B, K, D] or [K, D],
    constants, with ``negative_mask`` [B, K]), landmark without ``lm_model``, swap without ``G``."""
    w = dict(LOSS_WEIGHTS)
    if weights:
        w.update(weights)
    terms: Dict[str, torch.Tensor] = {}
    if fake_logits is not None and w["adv"]:
        terms["adv"] = hinge_g(fake_logits)
    if id_model is not None and (w["id"] or w["con"]):
        e_out = _embed(id_model, out)
        e_src = _embed(id_model, source).detach()
        if w["id"]:
            terms["id"] = (1.0 - (e_out * e_src).sum(-1)).mean()
        if w["con"] and e_neg is not None:
            terms["con"] = infonce_from_embeddings(e_out, e_src, e_neg.detach(), tau, negative_mask)
    if w["rec"]:
        terms["rec"] = reconstruction_loss(out, target, same_mask)
    if lm_model is not None and w["lm"]:
        terms["lm"] = landmark_loss(lm_model, out, target)
    if G is not None and w["swap"]:
        terms["swap"], _ = dual_swap_consistency(G, source, target, out)
    total = sum(w[k] * v for k, v in terms.items())
    if not terms:
        total = out.sum() * 0.0
    return total, terms
