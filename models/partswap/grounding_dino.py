"""Grounding DINO (Liu et al., "Grounding DINO: Marrying DINO with Grounded Pre-Training for Open-Set
Object Detection", ECCV 2024) from the OFFICIAL IDEA-Research checkpoints, run on transformers'
built-in ``GroundingDinoForObjectDetection``.

FuseAnyPart (sec. 3) finds the eyes, nose and mouth boxes with Grounding DINO and the captions
"eyes . nose . mouth .". Users have the official release files:

* ``groundingdino_swint_ogc.pth`` (Swin-T backbone, trained on O365 + GoldG + Cap4M, about 660 MB) and
* ``groundingdino_swinb_cogcoor.pth`` (Swin-B backbone, about 900 MB),

from the IDEA-Research/GroundingDINO GitHub releases or the hub repository ShilongLiu/GroundingDINO
(code and weights Apache-2.0). They are torch pickles ``{"model": state_dict}`` whose keys may carry the
``module.`` prefix of distributed training; they also hold the BERT text encoder (``bert.*``). The
tokenizer and the BERT config come from a local ``bert-base-uncased`` folder (google-bert/bert-base-uncased,
Apache-2.0: ``config.json`` and ``vocab.txt`` or ``tokenizer.json``); its weights are used only when a
checkpoint has no ``bert.*`` keys.

What this module does (the official code is not needed and torchvision is not imported):

1. `config_from_official` reads the architecture from the checkpoint's shapes; the fixed
   hyperparameters are those of the official configs ``GroundingDINO_SwinT_OGC.py`` and
   ``GroundingDINO_SwinB_cfg.py`` (hidden 256, 6 encoder + 6 decoder layers, 8 heads, FFN 2048,
   900 queries, 4 feature levels, 4 sampling points, two-stage "standard", shared decoder box heads,
   separate two-stage box head, sine position embedding with temperature 20, max_text_len 256,
   Swin features of stages 2-4 = ``return_interm_indices [1, 2, 3]``).
2. `convert_official_state_dict` renames the official keys into the transformers layout and splits
   the fused q/k/v projections (Swin ``attn.qkv``; ``nn.MultiheadAttention`` ``in_proj_*`` of the text
   enhancer and of the decoder's self- and text cross-attention) into query, key, value - rows
   ``[0:C]``, ``[C:2C]``, ``[2C:3C]``, the order of both timm/official Swin (``qkv.reshape(B, N, 3, h, d)``)
   and ``torch.nn.MultiheadAttention``. Rename facts were checked against transformers'
   ``convert_grounding_dino_to_hf.py`` (Apache-2.0) and against the key tables of the official code
   (``tests/data/grounding_dino_official_keys.json``); the mapping below is our own. transformers
   4.4x and 5.x name the Swin backbone differently (5.x: ``.swin.`` level, ``q_proj/k_proj/v_proj/
   o_proj``, ``mlp.fc1``); every rule therefore yields the 4.x name and its 5.x spelling, and the one
   present in the installed model is used.
3. `GroundingDino.detect` follows the official ``groundingdino.util.inference`` path: resize the
   shorter side to 800 (longer side at most 1333) with PIL bilinear, ImageNet mean/std, caption
   "p1 . p2 . p3 .", BERT tokens, model, sigmoid of the (queries x 256 tokens) logits, score = max over
   the caption's tokens as in the official ``predict()``; ``phrase_scores`` = max over each phrase's
   own tokens (token spans from the tokenizer's character offsets), zeroed below ``text_threshold``.

Official keys with no transformers counterpart (dropped, see `IGNORED_OFFICIAL`): the BERT pooler
(``bert.pooler.*``, unused by Grounding DINO), BERT's ``position_ids``/``token_type_ids`` buffers
(constants), and on transformers 5.x the Swin ``relative_position_index`` buffers (recomputed there).
transformers parameters with no official counterpart (filled, see `HF_DEFAULTS`): 5.x keeps a final
``swin.layernorm`` that the backbone never applies (the per-stage ``hidden_states_norms`` are the
official ``norm1..3``); it is set to the identity (weight 1, bias 0).

Known differences from the official code (parity check: tests/parity/grounding_dino_official.py,
max |diff| of pred_logits 6e-6 and pred_boxes 3e-7 with seeded random SwinT-OGC weights):
transformers inverts box sigmoids with ``logit(x, eps=1e-5)`` where the official code clamps at 1e-3,
so boxes with a coordinate within 0.1 % of an image edge (or narrower than 0.1 %) refine slightly
differently. And when an image is so elongated that the shorter side of Swin's
last stage drops to the window size or below (e.g. wider than about 5:1 for Swin-T), transformers'
Swin shrinks its window while the official Swin pads; outputs then differ.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..safe_load import load_torch_file

LICENCE = "Apache-2.0"
SOURCE = ("the IDEA-Research/GroundingDINO GitHub releases (groundingdino_swint_ogc.pth, "
          "groundingdino_swinb_cogcoor.pth) or the hub repository ShilongLiu/GroundingDINO")
BERT_SOURCE = "google-bert/bert-base-uncased (config.json + vocab.txt or tokenizer.json)"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SHORT_SIDE = 800
MAX_SIDE = 1333
MAX_TEXT_LEN = 256
SPECIAL_TOKENS = ("[CLS]", "[SEP]", ".", "?")  # official `specical_tokens`: phrase delimiters

# Official hyperparameters that shapes cannot tell (GroundingDINO_SwinT_OGC.py / _SwinB_cfg.py).
OFFICIAL_HEADS = 8
OFFICIAL_VARIANTS = {  # (embed_dim, depths, heads, window) -> name, Swin pretrain image size
    (96, (2, 2, 6, 2), (3, 6, 12, 24), 7): ("swint_ogc", 224),
    (128, (2, 2, 18, 2), (4, 8, 16, 32), 12): ("swinb", 384),
}

# Official keys dropped on purpose (no counterpart in transformers). relative_position_index is
# dropped only when the installed transformers recomputes it (5.x); 4.x stores it and it is mapped.
IGNORED_OFFICIAL = (
    re.compile(r"^bert\.pooler\."),
    re.compile(r"^bert\.embeddings\.(position_ids|token_type_ids)$"),
)
# transformers keys filled with a constant because the official model has no such tensor.
HF_DEFAULTS = ((re.compile(r"\.swin\.layernorm\.weight$"), 1.0),
               (re.compile(r"\.swin\.layernorm\.bias$"), 0.0))

_SIGNATURE = ("backbone.0.patch_embed.proj.weight", "transformer.tgt_embed.weight", "feat_map.weight")


def _require_transformers():
    try:
        import transformers  # noqa: F401
        from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection  # noqa: F401
    except ImportError as exc:  # also: an old transformers without Grounding DINO
        raise ImportError(
            "SwapForge Grounding DINO needs the 'transformers' package (>= 4.40, which has "
            f"GroundingDinoForObjectDetection); import failed: {exc}. Install it with "
            "`pip install \"transformers>=4.40\"`.") from exc
    return transformers


# ------------------------------------------------------------------------------------------------
# Records
# ------------------------------------------------------------------------------------------------

@dataclass
class Detection:
    """One detected box. ``box_xyxy``: float32 (4,) x0, y0, x1, y1 in input-image pixels (not
    clipped, like the official output). ``score``: max token probability of the query over the whole
    caption (official ``predict()``). ``phrase_scores``: (len(phrases),) max probability over each
    phrase's tokens, 0 where below ``text_threshold``. ``label``: argmax of ``phrase_scores``."""

    box_xyxy: np.ndarray
    score: float
    phrase_scores: np.ndarray
    label: int


# ------------------------------------------------------------------------------------------------
# Configuration from the checkpoint's shapes
# ------------------------------------------------------------------------------------------------

def _strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in state_dict.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out


def _count(state_dict: Mapping[str, torch.Tensor], pattern: str) -> int:
    """Number of distinct integers captured by ``pattern`` (one group) among the keys."""
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in state_dict for m in [rx.match(k)] if m}
    return max(found) + 1 if found else 0


def swin_variant(state_dict: Mapping[str, torch.Tensor]) -> Tuple[str, dict]:
    """Read the Swin backbone's architecture from official key shapes.

    Returns (variant name or "custom", dict with embed_dim, depths, num_heads, window_size,
    patch_size, mlp_ratio, out_stages)."""
    sd = state_dict
    proj = sd["backbone.0.patch_embed.proj.weight"]
    embed_dim, patch = int(proj.shape[0]), int(proj.shape[-1])
    n_layers = _count(sd, r"^backbone\.0\.layers\.(\d+)\.")
    depths, heads = [], []
    window = None
    for i in range(n_layers):
        depths.append(_count(sd, rf"^backbone\.0\.layers\.{i}\.blocks\.(\d+)\."))
        table = sd[f"backbone.0.layers.{i}.blocks.0.attn.relative_position_bias_table"]
        heads.append(int(table.shape[1]))
        w = (math.isqrt(int(table.shape[0])) + 1) // 2
        if (2 * w - 1) ** 2 != int(table.shape[0]) or (window is not None and w != window):
            raise ValueError(f"Swin relative_position_bias_table of layer {i} has shape "
                             f"{tuple(table.shape)}, which is no (2w-1)^2 x heads window table.")
        window = w
    mlp_ratio = sd["backbone.0.layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed_dim
    out_stages = sorted(int(m.group(1)) + 1 for k in sd
                        for m in [re.match(r"^backbone\.0\.norm(\d+)\.weight$", k)] if m)
    info = dict(embed_dim=embed_dim, depths=depths, num_heads=heads, window_size=window,
                patch_size=patch, mlp_ratio=float(mlp_ratio), out_stages=out_stages)
    name, _ = OFFICIAL_VARIANTS.get((embed_dim, tuple(depths), tuple(heads), window), ("custom", 224))
    return name, info


def config_from_official(state_dict: Mapping[str, torch.Tensor], bert_config):
    """A transformers ``GroundingDinoConfig`` for an official checkpoint.

    Sizes come from the shapes (Swin embed dim, depths, heads and window; hidden size; layer counts;
    FFN sizes; queries; feature levels; sampling points); the rest is the official configuration
    (see the module docstring). ``bert_config``: a ``BertConfig`` (or its dict) of the text encoder."""
    _require_transformers()
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    sd = _strip_prefix(state_dict)
    missing = [k for k in _SIGNATURE if k not in sd]
    if missing:
        raise ValueError(f"not an official Grounding DINO state dict: no {', '.join(missing)}.")
    name, sw = swin_variant(sd)
    pretrain = OFFICIAL_VARIANTS.get((sw["embed_dim"], tuple(sw["depths"]), tuple(sw["num_heads"]),
                                      sw["window_size"]), (name, 224))[1]
    backbone = SwinConfig(
        image_size=pretrain, patch_size=sw["patch_size"], num_channels=3, embed_dim=sw["embed_dim"],
        depths=sw["depths"], num_heads=sw["num_heads"], window_size=sw["window_size"],
        mlp_ratio=sw["mlp_ratio"], qkv_bias=True, hidden_act="gelu", use_absolute_embeddings=False,
        layer_norm_eps=1e-5, drop_path_rate=0.0,
        out_features=[f"stage{s}" for s in sw["out_stages"]])
    if isinstance(bert_config, Mapping):
        bert_config = BertConfig(**bert_config)
    d_model = int(sd["feat_map.weight"].shape[0])
    if int(sd["feat_map.weight"].shape[1]) != bert_config.hidden_size:
        raise ValueError(f"the checkpoint's text projection feat_map.weight has shape "
                         f"{tuple(sd['feat_map.weight'].shape)}, but the BERT config has hidden_size "
                         f"{bert_config.hidden_size}; expected (hidden, {bert_config.hidden_size}).")
    levels = _count(sd, r"^input_proj\.(\d+)\.")
    enc_layers = _count(sd, r"^transformer\.encoder\.layers\.(\d+)\.")
    dec_layers = _count(sd, r"^transformer\.decoder\.layers\.(\d+)\.")
    enc_ffn = int(sd["transformer.encoder.layers.0.linear1.weight"].shape[0])
    dec_ffn = int(sd["transformer.decoder.layers.0.linear1.weight"].shape[0])
    text_ffn = int(sd["transformer.encoder.text_layers.0.linear1.weight"].shape[0])
    fusion_dim = int(sd["transformer.encoder.fusion_layers.0.attn.v_proj.weight"].shape[0])
    if text_ffn != enc_ffn // 2 or fusion_dim != enc_ffn // 2:
        raise ValueError(f"text-enhancer FFN {text_ffn} / fusion width {fusion_dim} are not half the "
                         f"encoder FFN {enc_ffn}, which transformers' Grounding DINO assumes.")
    enc_weights = int(sd["transformer.encoder.layers.0.self_attn.attention_weights.weight"].shape[0])
    dec_weights = int(sd["transformer.decoder.layers.0.cross_attn.attention_weights.weight"].shape[0])
    heads = OFFICIAL_HEADS
    kwargs = dict(
        backbone_config=backbone, text_config=bert_config,
        num_queries=int(sd["transformer.tgt_embed.weight"].shape[0]),
        encoder_layers=enc_layers, decoder_layers=dec_layers,
        encoder_ffn_dim=enc_ffn, decoder_ffn_dim=dec_ffn,
        encoder_attention_heads=heads, decoder_attention_heads=heads,
        d_model=d_model, activation_function="relu", dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, position_embedding_type="sine", positional_embedding_temperature=20,
        num_feature_levels=levels,
        encoder_n_points=enc_weights // (heads * levels), decoder_n_points=dec_weights // (heads * levels),
        two_stage=True, two_stage_bbox_embed_share=False, decoder_bbox_embed_share=True,
        embedding_init_target=True, query_dim=4, max_text_len=MAX_TEXT_LEN,
        text_enhancer_dropout=0.0, fusion_dropout=0.0, fusion_droppath=0.0,
        disable_custom_kernels=True, layer_norm_eps=1e-5,
    )
    return GroundingDinoConfig(**kwargs)


# ------------------------------------------------------------------------------------------------
# Key conversion
# ------------------------------------------------------------------------------------------------

# (official regex, transformers 4.x name template); applied to the key after "module." is stripped.
_SWIN = "model.backbone.conv_encoder.model"
_BLOCK = r"^backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\."
_HF_BLOCK = _SWIN + r".encoder.layers.\1.blocks.\2."
_RENAMES: Tuple[Tuple[str, str], ...] = (
    # Swin backbone (official = Swin-Transformer-Object-Detection layout)
    (r"^backbone\.0\.patch_embed\.proj\.", _SWIN + ".embeddings.patch_embeddings.projection."),
    (r"^backbone\.0\.patch_embed\.norm\.", _SWIN + ".embeddings.norm."),
    (_BLOCK + r"norm1\.", _HF_BLOCK + "layernorm_before."),
    (_BLOCK + r"norm2\.", _HF_BLOCK + "layernorm_after."),
    (_BLOCK + r"attn\.relative_position_bias_table$", _HF_BLOCK + "attention.self.relative_position_bias_table"),
    (_BLOCK + r"attn\.relative_position_index$", _HF_BLOCK + "attention.self.relative_position_index"),
    (_BLOCK + r"attn\.proj\.", _HF_BLOCK + "attention.output.dense."),
    (_BLOCK + r"mlp\.fc1\.", _HF_BLOCK + "intermediate.dense."),
    (_BLOCK + r"mlp\.fc2\.", _HF_BLOCK + "output.dense."),
    (r"^backbone\.0\.layers\.(\d+)\.downsample\.", _SWIN + r".encoder.layers.\1.downsample."),
    # backbone.0.norm{i} normalises the output of stage i+1 (return_interm_indices are 0-based)
    (r"^backbone\.0\.norm(\d+)\.", None),
    # text encoder and projections
    (r"^bert\.", "model.text_backbone."),
    (r"^feat_map\.", "model.text_projection."),
    (r"^input_proj\.", "model.input_proj_vision."),
    # transformer: globals
    (r"^transformer\.level_embed$", "model.level_embed"),
    (r"^transformer\.tgt_embed\.", "model.query_position_embeddings."),
    (r"^transformer\.enc_output\.", "model.enc_output."),
    (r"^transformer\.enc_output_norm\.", "model.enc_output_norm."),
    (r"^transformer\.enc_out_bbox_embed\.", "model.encoder_output_bbox_embed."),
    # encoder: deformable image layers
    (r"^transformer\.encoder\.layers\.(\d+)\.self_attn\.", r"model.encoder.layers.\1.deformable_layer.self_attn."),
    (r"^transformer\.encoder\.layers\.(\d+)\.norm1\.", r"model.encoder.layers.\1.deformable_layer.self_attn_layer_norm."),
    (r"^transformer\.encoder\.layers\.(\d+)\.linear1\.", r"model.encoder.layers.\1.deformable_layer.fc1."),
    (r"^transformer\.encoder\.layers\.(\d+)\.linear2\.", r"model.encoder.layers.\1.deformable_layer.fc2."),
    (r"^transformer\.encoder\.layers\.(\d+)\.norm2\.", r"model.encoder.layers.\1.deformable_layer.final_layer_norm."),
    # encoder: text enhancer layers
    (r"^transformer\.encoder\.text_layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$",
     r"model.encoder.layers.\1.text_enhancer_layer.self_attn.{qkv}.\2"),
    (r"^transformer\.encoder\.text_layers\.(\d+)\.self_attn\.out_proj\.", r"model.encoder.layers.\1.text_enhancer_layer.self_attn.out_proj."),
    (r"^transformer\.encoder\.text_layers\.(\d+)\.linear1\.", r"model.encoder.layers.\1.text_enhancer_layer.fc1."),
    (r"^transformer\.encoder\.text_layers\.(\d+)\.linear2\.", r"model.encoder.layers.\1.text_enhancer_layer.fc2."),
    (r"^transformer\.encoder\.text_layers\.(\d+)\.norm1\.", r"model.encoder.layers.\1.text_enhancer_layer.layer_norm_before."),
    (r"^transformer\.encoder\.text_layers\.(\d+)\.norm2\.", r"model.encoder.layers.\1.text_enhancer_layer.layer_norm_after."),
    # encoder: bi-directional image-text fusion layers
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.gamma_v$", r"model.encoder.layers.\1.fusion_layer.vision_param"),
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.gamma_l$", r"model.encoder.layers.\1.fusion_layer.text_param"),
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.layer_norm_v\.", r"model.encoder.layers.\1.fusion_layer.layer_norm_vision."),
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.layer_norm_l\.", r"model.encoder.layers.\1.fusion_layer.layer_norm_text."),
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.attn\.v_proj\.", r"model.encoder.layers.\1.fusion_layer.attn.vision_proj."),
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.attn\.l_proj\.", r"model.encoder.layers.\1.fusion_layer.attn.text_proj."),
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.attn\.values_v_proj\.", r"model.encoder.layers.\1.fusion_layer.attn.values_vision_proj."),
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.attn\.values_l_proj\.", r"model.encoder.layers.\1.fusion_layer.attn.values_text_proj."),
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.attn\.out_v_proj\.", r"model.encoder.layers.\1.fusion_layer.attn.out_vision_proj."),
    (r"^transformer\.encoder\.fusion_layers\.(\d+)\.attn\.out_l_proj\.", r"model.encoder.layers.\1.fusion_layer.attn.out_text_proj."),
    # decoder layers (official order: self-attn, text cross-attn, image deformable cross-attn, FFN)
    (r"^transformer\.decoder\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$", r"model.decoder.layers.\1.self_attn.{qkv}.\2"),
    (r"^transformer\.decoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"model.decoder.layers.\1.self_attn.out_proj."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm2\.", r"model.decoder.layers.\1.self_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.ca_text\.in_proj_(weight|bias)$", r"model.decoder.layers.\1.encoder_attn_text.{qkv}.\2"),
    (r"^transformer\.decoder\.layers\.(\d+)\.ca_text\.out_proj\.", r"model.decoder.layers.\1.encoder_attn_text.out_proj."),
    (r"^transformer\.decoder\.layers\.(\d+)\.catext_norm\.", r"model.decoder.layers.\1.encoder_attn_text_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.cross_attn\.", r"model.decoder.layers.\1.encoder_attn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm1\.", r"model.decoder.layers.\1.encoder_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.linear1\.", r"model.decoder.layers.\1.fc1."),
    (r"^transformer\.decoder\.layers\.(\d+)\.linear2\.", r"model.decoder.layers.\1.fc2."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm3\.", r"model.decoder.layers.\1.final_layer_norm."),
    (r"^transformer\.decoder\.norm\.", "model.decoder.layer_norm."),
    (r"^transformer\.decoder\.ref_point_head\.", "model.decoder.reference_points_head."),
    (r"^transformer\.decoder\.bbox_embed\.", "model.decoder.bbox_embed."),
    # heads: official bbox_embed / class_embed (ContrastiveEmbed has no parameters)
    (r"^bbox_embed\.", "bbox_embed."),
)
_COMPILED = tuple((re.compile(p), r) for p, r in _RENAMES)
_SWIN_QKV = re.compile(_BLOCK + r"attn\.qkv\.(weight|bias)$")

# transformers 5.x spelling of the 4.x Swin names (applied in order to a 4.x name).
_V5_SWIN = (
    (re.compile(r"^model\.backbone\.conv_encoder\.model\.(embeddings|encoder)\."),
     r"model.backbone.conv_encoder.model.swin.\1."),
    (re.compile(r"\.attention\.self\.query\."), ".attention.q_proj."),
    (re.compile(r"\.attention\.self\.key\."), ".attention.k_proj."),
    (re.compile(r"\.attention\.self\.value\."), ".attention.v_proj."),
    (re.compile(r"\.attention\.output\.dense\."), ".attention.o_proj."),
    (re.compile(r"\.attention\.self\.relative_position_(bias_table|index)$"),
     r".attention.relative_position_bias.relative_position_\1"),
    (re.compile(r"(\.blocks\.\d+)\.intermediate\.dense\."), r"\1.mlp.fc1."),
    (re.compile(r"(\.blocks\.\d+)\.output\.dense\."), r"\1.mlp.fc2."),
)


def _variants(hf4_name: str) -> List[str]:
    """The 4.x name and its 5.x spelling (the same string when the two agree)."""
    v5 = hf4_name
    if v5.startswith(_SWIN + "."):
        for rx, rep in _V5_SWIN:
            v5 = rx.sub(rep, v5)
    return [hf4_name] if v5 == hf4_name else [hf4_name, v5]


def official_to_hf_names(key: str) -> List[Tuple[List[str], Optional[slice]]]:
    """Transformers names for one official key: a list of (name variants, row slice or None).

    A fused q/k/v tensor gives three entries (query, key, value) with slices of the first dimension;
    an unknown key gives []."""
    m = _SWIN_QKV.match(key)
    if m:
        i, j, kind = m.group(1), m.group(2), m.group(3)
        base = f"{_SWIN}.encoder.layers.{i}.blocks.{j}.attention.self."
        return [(_variants(base + f"{part}.{kind}"), None) for part in ("query", "key", "value")]
    m = re.match(r"^backbone\.0\.norm(\d+)\.(weight|bias)$", key)
    if m:
        return [([f"{_SWIN}.hidden_states_norms.stage{int(m.group(1)) + 1}.{m.group(2)}"], None)]
    for rx, rep in _COMPILED:
        if rep is None:
            continue
        mm = rx.match(key)
        if not mm:
            continue
        new = mm.expand(rep) + key[mm.end():]
        if "{qkv}" in new:
            return [([new.replace("{qkv}", part)], None) for part in ("query", "key", "value")]
        return [(_variants(new), None)]
    return []


def _split_rows(tensor: torch.Tensor, index: int, parts: int = 3) -> torch.Tensor:
    rows = tensor.shape[0] // parts
    return tensor[index * rows:(index + 1) * rows]


def _target_shapes(config) -> Dict[str, Tuple[torch.Size, torch.dtype]]:
    """State-dict names, shapes and dtypes of a transformers model for ``config`` (built on the meta
    device when possible; transformers 4.x Swin calls .item() at build, then it is built on CPU)."""
    from transformers import GroundingDinoForObjectDetection

    try:
        with torch.device("meta"):
            model = GroundingDinoForObjectDetection(config)
    except (RuntimeError, NotImplementedError):
        model = GroundingDinoForObjectDetection(config)
    return {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor], config,
                                target: Optional[Mapping[str, object]] = None) -> Dict[str, torch.Tensor]:
    """Official Grounding DINO state dict -> transformers ``GroundingDinoForObjectDetection`` state dict.

    ``target``: the model's ``state_dict()`` (or name -> (shape, dtype)); built from ``config`` when
    omitted. Every official key must map onto a target key of the same shape (or be one of the
    documented `IGNORED_OFFICIAL` keys) and every target key must be filled (from the official keys or
    `HF_DEFAULTS`), otherwise ``ValueError`` lists the unexpected, missing and mis-shaped keys.
    Tensors are shared with the input where no split is needed (no copy)."""
    _require_transformers()
    sd = _strip_prefix(state_dict)
    if target is None:
        target = _target_shapes(config)
    shapes = {k: (tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else (tuple(v[0]), v[1])
              for k, v in target.items()}
    out: Dict[str, torch.Tensor] = {}
    unexpected, mismatched = [], []
    for key, value in sd.items():
        if any(rx.search(key) for rx in IGNORED_OFFICIAL):
            continue
        entries = official_to_hf_names(key)
        if not entries:
            unexpected.append(key)
            continue
        for index, (names, _) in enumerate(entries):
            name = next((n for n in names if n in shapes), None)
            if name is None:
                if key.endswith("relative_position_index"):
                    continue  # transformers 5.x recomputes it (non-persistent buffer)
                unexpected.append(f"{key} -> {names[-1]}")
                continue
            tensor = _split_rows(value, index) if len(entries) == 3 else value
            if tuple(tensor.shape) != shapes[name][0]:
                mismatched.append(f"{key} {tuple(tensor.shape)} -> {name} expects {shapes[name][0]}")
                continue
            out[name] = tensor
    for name, (shape, dtype) in shapes.items():
        if name in out:
            continue
        for rx, fill in HF_DEFAULTS:
            if rx.search(name):
                out[name] = torch.full(shape, fill, dtype=dtype)
                break
    missing = sorted(set(shapes) - set(out))
    if unexpected or missing or mismatched:
        def _list(items):
            return ", ".join(items[:12]) + (f" (+{len(items) - 12} more)" if len(items) > 12 else "")
        parts = []
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected official keys: {_list(unexpected)}")
        if missing:
            parts.append(f"{len(missing)} transformers keys without a value: {_list(missing)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches: {_list(mismatched)}")
        raise ValueError("Grounding DINO conversion failed; " + "; ".join(parts) + ".")
    return out


# ------------------------------------------------------------------------------------------------
# Inference wrapper
# ------------------------------------------------------------------------------------------------

def resized_size(height: int, width: int, size: int = SHORT_SIDE, max_size: int = MAX_SIDE) -> Tuple[int, int]:
    """(H, W) after the official ``RandomResize([800], max_size=1333)``: shorter side ``size``, unless
    the longer side would pass ``max_size`` (then the shorter side shrinks, rounded); the longer side
    is truncated with int() like the official ``get_size_with_aspect_ratio``."""
    lo, hi = float(min(height, width)), float(max(height, width))
    if hi / lo * size > max_size:
        size = int(round(max_size * lo / hi))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def preprocess_image(image: np.ndarray) -> torch.Tensor:
    """HxWx3 float 0..1 RGB -> (1, 3, h, w) normalised tensor, as the official ``load_image`` does to a
    PIL image: 8-bit, PIL bilinear resize, /255, ImageNet mean/std."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"SwapForge Grounding DINO: image must be H x W x 3 RGB, got shape {arr.shape}.")
    u8 = np.clip(np.round(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    h, w = u8.shape[:2]
    nh, nw = resized_size(h, w)
    pil = Image.fromarray(u8, "RGB")
    if (nh, nw) != (h, w):
        pil = pil.resize((nw, nh), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std)[None]


def build_caption(phrases: Sequence[str]) -> Tuple[str, List[Tuple[int, int]]]:
    """Caption "p1 . p2 . p3 ." (lower case, as the official demos) and each phrase's character span."""
    caption, spans = "", []
    for p in phrases:
        p = " ".join(str(p).lower().split()).strip(" .")
        if not p:
            raise ValueError(f"SwapForge Grounding DINO: empty phrase in {list(phrases)!r}.")
        if caption:
            caption += " . "
        spans.append((len(caption), len(caption) + len(p)))
        caption += p
    if not spans:
        raise ValueError("SwapForge Grounding DINO: no phrases given; pass e.g. ['eyes', 'nose', 'mouth'].")
    return caption + " .", spans


def phrase_token_spans(tokenizer, caption: str, char_spans: Sequence[Tuple[int, int]]):
    """Tokenise ``caption``; returns (encoding, list of token-index lists, one per phrase).

    A token belongs to a phrase when its character offsets lie inside the phrase's span."""
    enc = tokenizer(caption, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    ids = enc["input_ids"]
    specials = set(tokenizer.all_special_ids)
    groups = []
    for start, end in char_spans:
        groups.append([t for t, (a, b) in enumerate(offsets)
                       if ids[t] not in specials and b > a and a >= start and b <= end])
    return enc, groups


class GroundingDino:
    """An official Grounding DINO checkpoint running on transformers' ``GroundingDinoForObjectDetection``.

    ``variant``: "swint_ogc", "swinb" (or "custom" for other official-layout sizes)."""

    def __init__(self, model, tokenizer, variant: str):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.variant = variant
        self.text_encodings = 0  # text-encoder runs inside text_cache blocks (how often a caption was encoded)

    @property
    def device(self) -> torch.device:
        """Where the model is now (read each time: ComfyUI's memory manager moves it between calls)."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device=None, dtype=None) -> "GroundingDino":
        kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        if kwargs:
            self.model.to(**kwargs)
        return self

    @contextlib.contextmanager
    def text_cache(self):
        """Within the block, the BERT text encoder runs once per distinct caption: the Part Detector asks about
        the same prompt for every face of every frame, and only the image side changes. The encoder's output
        for a caption is kept (keyed by its token ids, masks and positions, compared exactly) and handed back
        for the same caption; leaving the block drops it. Outputs are the same numbers as without the cache."""
        backbone = getattr(getattr(self.model, "model", None), "text_backbone", None)
        if backbone is None:  # an unexpected transformers layout: run uncached
            yield self
            return
        run = backbone.forward
        hits: list = []  # (tensor arguments, other arguments, output) per caption seen

        def cached(*args, **kwargs):
            key = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
            plain = tuple(sorted((k, v) for k, v in kwargs.items() if not isinstance(v, torch.Tensor)))
            for k_args, k_plain, out in hits:
                if k_plain == plain and len(k_args) == len(key) and all(
                        a.shape == b.shape and a.device == b.device and torch.equal(a, b) for a, b in zip(k_args, key)):
                    return out
            out = run(*args, **kwargs)
            hits.append(([a.clone() for a in key], plain, out))
            self.text_encodings += 1
            return out

        backbone.forward = cached
        try:
            yield self
        finally:
            del backbone.forward  # back to the class's forward

    @torch.no_grad()
    def forward_raw(self, pixel_values: torch.Tensor, caption: str):
        """Model outputs for a preprocessed image and a caption: (logits (1, Q, 256), boxes (1, Q, 4)
        normalised cx, cy, w, h, encoding)."""
        enc = self.tokenizer(caption, return_tensors="pt")
        out = self.model(pixel_values=pixel_values.to(self.device, self.dtype),
                         input_ids=enc["input_ids"].to(self.device),
                         attention_mask=enc["attention_mask"].to(self.device),
                         token_type_ids=enc["token_type_ids"].to(self.device)
                         if "token_type_ids" in enc else None,
                         pixel_mask=torch.ones(pixel_values.shape[:1] + pixel_values.shape[2:],
                                               dtype=torch.long, device=self.device))
        return out.logits, out.pred_boxes, enc

    def detect(self, image: np.ndarray, phrases: Sequence[str], box_threshold: float = 0.35,
               text_threshold: float = 0.25) -> List[Detection]:
        """Boxes for ``phrases`` in an HxWx3 float32 0..1 RGB image, best score first."""
        image = np.asarray(image)
        h, w = image.shape[:2]
        caption, char_spans = build_caption(phrases)
        _, groups = phrase_token_spans(self.tokenizer, caption, char_spans)
        logits, boxes, enc = self.forward_raw(preprocess_image(image), caption)
        n_tok = min(int(enc["input_ids"].shape[1]), MAX_TEXT_LEN)
        prob = logits[0, :, :n_tok].float().sigmoid().cpu()           # (Q, tokens)
        score = prob.max(dim=1).values                                 # official predict()
        keep = torch.nonzero(score > box_threshold).flatten()
        keep = keep[torch.argsort(score[keep], descending=True, stable=True)]
        dets = []
        for q in keep.tolist():
            ps = np.zeros(len(groups), np.float32)
            for i, toks in enumerate(groups):
                toks = [t for t in toks if t < n_tok]
                if toks:
                    m = float(prob[q, toks].max())
                    ps[i] = m if m >= text_threshold else 0.0
            cx, cy, bw, bh = boxes[0, q].float().cpu().tolist()
            box = np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h],
                           np.float32)
            dets.append(Detection(box_xyxy=box, score=float(score[q]), phrase_scores=ps,
                                  label=int(np.argmax(ps))))
        return dets


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------

def _checkpoint_hint() -> str:
    return (f"Expected an official Grounding DINO checkpoint (groundingdino_swint_ogc.pth or "
            f"groundingdino_swinb_cogcoor.pth, licence {LICENCE}) from {SOURCE}.")


def _read_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SwapForge Grounding DINO: no checkpoint file at {path}. {_checkpoint_hint()}")
    try:
        if path.lower().endswith(".safetensors"):
            from safetensors.torch import load_file
            obj = load_file(path, device="cpu")
        else:
            obj = load_torch_file(path)
    except Exception as exc:  # truncated zip, bad pickle, bad header, ...
        size = os.path.getsize(path)
        raise ValueError(
            f"SwapForge Grounding DINO: could not read {path} ({size / 2**20:.1f} MiB): {exc}. The file is "
            f"damaged or incomplete (an interrupted download?). {_checkpoint_hint()} Download it again."
        ) from exc
    if isinstance(obj, Mapping):
        for wrap in ("model", "state_dict", "module"):
            if isinstance(obj.get(wrap), Mapping):
                obj = obj[wrap]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"SwapForge Grounding DINO: {path} holds no state dict of tensors. {_checkpoint_hint()}")
    sd = _strip_prefix(obj)
    missing = [k for k in _SIGNATURE if k not in sd]
    if missing:
        hf_layout = any(k.startswith("model.backbone.conv_encoder") for k in sd)
        what = ("a checkpoint in the transformers (Hugging Face) layout, not the official one"
                if hf_layout else f"no Grounding DINO checkpoint (no {', '.join(missing)}; "
                                  f"first keys: {', '.join(list(sd)[:3]) or 'none'})")
        raise ValueError(f"SwapForge Grounding DINO: {path} is {what}. {_checkpoint_hint()}")
    return sd


def _bert_files(bert_dir: str) -> None:
    if not os.path.isdir(bert_dir):
        raise FileNotFoundError(
            f"SwapForge Grounding DINO: BERT folder {bert_dir} does not exist. Expected a bert-base-uncased "
            f"folder with config.json and vocab.txt (or tokenizer.json) from {BERT_SOURCE}, licence "
            f"{LICENCE}. Put it there (e.g. models/bert-base-uncased/).")
    lacking = []
    if not os.path.isfile(os.path.join(bert_dir, "config.json")):
        lacking.append("config.json")
    if not any(os.path.isfile(os.path.join(bert_dir, f)) for f in ("vocab.txt", "tokenizer.json")):
        lacking.append("vocab.txt (or tokenizer.json)")
    if lacking:
        raise FileNotFoundError(
            f"SwapForge Grounding DINO: BERT folder {bert_dir} lacks {' and '.join(lacking)}. Expected the "
            f"bert-base-uncased files from {BERT_SOURCE}, licence {LICENCE}.")


def _bert_weights_from_folder(bert_dir: str, checkpoint_path: str) -> Dict[str, torch.Tensor]:
    """BERT weights from the folder, as official ``bert.*`` keys (pooler included when present)."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = os.path.join(bert_dir, name)
        if os.path.isfile(path):
            try:
                if name.endswith(".safetensors"):
                    from safetensors.torch import load_file
                    raw = load_file(path, device="cpu")
                else:
                    raw = load_torch_file(path)
            except Exception as exc:
                raise ValueError(f"SwapForge Grounding DINO: could not read BERT weights {path}: {exc}. "
                                 f"Download them again from {BERT_SOURCE}.") from exc
            out = {}
            for k, v in raw.items():
                k = k[len("bert."):] if k.startswith("bert.") else k
                if k.startswith(("embeddings.", "encoder.", "pooler.")):
                    out["bert." + k] = v
            return out
    raise FileNotFoundError(
        f"SwapForge Grounding DINO: {checkpoint_path} has no BERT weights (bert.* keys) and the BERT folder "
        f"{bert_dir} has no model.safetensors or pytorch_model.bin. Put the bert-base-uncased weights from "
        f"{BERT_SOURCE} into the folder, or use the official checkpoint, which contains them.")


def load_tokenizer(bert_dir: str):
    _require_transformers()
    _bert_files(bert_dir)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(bert_dir, local_files_only=True)
    except Exception as exc:
        raise ValueError(f"SwapForge Grounding DINO: could not load the BERT tokenizer from {bert_dir}: {exc}. "
                         f"Expected the bert-base-uncased files from {BERT_SOURCE}.") from exc
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"SwapForge Grounding DINO: the tokenizer in {bert_dir} gives no character offsets "
                         f"(install the 'tokenizers' package).")
    return tok


def load_grounding_dino(checkpoint_path: str, bert_dir: str) -> GroundingDino:
    """Load an official Grounding DINO checkpoint (.pth or .safetensors) and a local BERT folder."""
    transformers = _require_transformers()
    from transformers import BertConfig, GroundingDinoForObjectDetection

    tokenizer = load_tokenizer(bert_dir)
    sd = _read_checkpoint(checkpoint_path)
    sd_variant = {k: v for k, v in sd.items() if k.startswith("backbone.0.")}
    bert_config = BertConfig.from_pretrained(bert_dir, local_files_only=True)
    if not any(k.startswith("bert.") for k in sd):
        sd.update(_bert_weights_from_folder(bert_dir, checkpoint_path))
    emb = sd.get("bert.embeddings.word_embeddings.weight")
    if emb is not None and tuple(emb.shape) != (bert_config.vocab_size, bert_config.hidden_size):
        raise ValueError(
            f"SwapForge Grounding DINO: {checkpoint_path} has BERT word embeddings of shape {tuple(emb.shape)} "
            f"but {os.path.join(bert_dir, 'config.json')} says ({bert_config.vocab_size}, "
            f"{bert_config.hidden_size}); expected bert-base-uncased (30522, 768) from {BERT_SOURCE}.")
    try:
        config = config_from_official(sd, bert_config)
        model = GroundingDinoForObjectDetection(config)
        hf = convert_official_state_dict(sd, config, target=model.state_dict())
    except (KeyError, ValueError) as exc:
        raise ValueError(f"SwapForge Grounding DINO: {checkpoint_path} does not fit the official Grounding "
                         f"DINO layout: {exc} {_checkpoint_hint()}") from exc
    model.load_state_dict(hf, strict=True)
    del sd, hf
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    special = getattr(model.model, "special_tokens", None)
    if isinstance(special, torch.Tensor):
        special.copy_(torch.tensor(ids, dtype=special.dtype))  # the official code reads them likewise
    elif ids != [101, 102, 1012, 1029]:
        raise ValueError(
            f"SwapForge Grounding DINO: the vocabulary in {bert_dir} puts [CLS], [SEP], '.', '?' at {ids}; "
            f"transformers {transformers.__version__} hard-codes bert-base-uncased's [101, 102, 1012, 1029]. "
            f"Use the bert-base-uncased files from {BERT_SOURCE}.")
    return GroundingDino(model.eval(), tokenizer, swin_variant(_strip_prefix(sd_variant))[0])
