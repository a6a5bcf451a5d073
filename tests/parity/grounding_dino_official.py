"""Optional parity check: our Grounding DINO loader against the official IDEA-Research code.

Two roles in one file:

* As a pytest module (``pytest tests/parity/grounding_dino_official.py``) it is the parity test. It skips
  unless ``SWAPFORGE_GDINO_PYTHON`` names a Python that has ``groundingdino-py`` (0.4.0) and
  ``transformers<5`` installed (groundingdino calls ``BertModel.get_extended_attention_mask``, gone in
  transformers 5). That Python runs this file as a script (role below) to build the official SwinT-OGC
  model with seeded random weights, save it as an official-layout checkpoint ``{"model": state_dict}``
  and record the official outputs for a fixed image and caption. Our loader
  (``models.partswap.grounding_dino.load_grounding_dino``) then loads that checkpoint on the
  transformers ``GroundingDinoForObjectDetection`` of *this* Python and must reproduce
  ``pred_logits`` and ``pred_boxes`` (max abs diff < 1e-4), the preprocessed image, the token ids and the
  official ``predict()`` detections.

* As a script run by the official Python:
    ``python grounding_dino_official.py run --variant swint_ogc --out DIR``: the run described above;
    ``python grounding_dino_official.py keys --out FILE``: writes the key -> shape tables of the official
    SwinT-OGC and SwinB models (``tests/data/grounding_dino_official_keys.json``), built from the
    official config files ``GroundingDINO_SwinT_OGC.py`` / ``GroundingDINO_SwinB_cfg.py`` that ship in
    the groundingdino package.

Neither role needs the real weights or a network: BERT is a bert-base-uncased-shaped folder written
here (``config.json`` with hidden 768, 12 layers, vocab 30522; a synthetic ``vocab.txt`` whose special
tokens sit at the real ids: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, "." 1012, "?" 1029).
The official code loads BERT with ``BertModel.from_pretrained(folder)``; the script replaces that one
call with ``BertModel(BertConfig.from_pretrained(folder))`` so that no weight file is needed, then
overwrites every parameter with seeded random values (scaled so activations stay tame, and so that
zero-initialised layers such as the box heads' last layer are non-zero and a wrong mapping shows).

Setting up such a Python (CPU torch; see scripts/setup_venv.sh for the torchvision shim)::

    python3.11 -m venv /tmp/gdvenv
    /tmp/gdvenv/bin/pip install torch==2.13.0
    /tmp/gdvenv/bin/pip install --no-deps torchvision==0.28.0
    bash scripts/tvshim/build.sh /tmp/gdvenv
    printf 'torch==2.13.0\\ntorchvision==0.28.0\\n' > /tmp/c.txt
    /tmp/gdvenv/bin/pip install -c /tmp/c.txt groundingdino-py==0.4.0 transformers==4.46.3
    SWAPFORGE_GDINO_PYTHON=/tmp/gdvenv/bin/python .venv/bin/python -m pytest -q -s tests/parity/grounding_dino_official.py
"""
from __future__ import annotations

import json
import os
import sys

# --------------------------------------------------------------------------------------------------
# Shared by both roles (standard library only at import time)
# --------------------------------------------------------------------------------------------------

BERT_BASE_UNCASED_CONFIG = {
    "architectures": ["BertForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30522,
}

# Words the fixed captions use; they get ids from 2000 up in the synthetic vocabulary.
WORDS = ["a", "cat", "dog", "remote", "control", "eyes", "nose", "mouth", "person", "face", "left", "eye",
         "hair", "##s", "##y"] + [chr(c) for c in range(ord("b"), ord("z") + 1)] + \
        ["##" + chr(c) for c in range(ord("a"), ord("z") + 1)]
CAPTION_PHRASES = ["cat", "remote control", "dogs", "eyes"]
SEED = 1234


def write_bert_folder(path: str, vocab_size: int = 30522, hidden_size: int = 768, layers: int = 12,
                      heads: int = 12, intermediate: int = 3072) -> str:
    """Write a BERT folder (config.json, vocab.txt, tokenizer_config.json) with the real special-token
    ids of bert-base-uncased and a few words; returns ``path``."""
    os.makedirs(path, exist_ok=True)
    vocab = [f"[unused{i}]" for i in range(vocab_size)]
    fixed = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}
    for i, w in enumerate(WORDS):
        fixed[min(2000, vocab_size - len(WORDS) - 1) + i] = w
    for i, tok in fixed.items():
        vocab[i] = tok
    with open(os.path.join(path, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    cfg = dict(BERT_BASE_UNCASED_CONFIG, vocab_size=vocab_size, hidden_size=hidden_size,
               num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer"}, f)
    return path


def caption_of(phrases) -> str:
    """The caption the official demos build: lower-cased phrases joined by ' . ', ending ' .'."""
    return " . ".join(p.strip().lower() for p in phrases) + " ."


def fixed_image(height: int = 480, width: int = 640):
    """A deterministic RGB uint8 image (smooth gradients + blocks), as float32 0..1 numpy HxWx3."""
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 37.0) * np.cos(yy / 23.0)], -1)
    img[100:220, 150:330] = (0.9, 0.2, 0.1)
    img[300:420, 400:600] = (0.1, 0.3, 0.8)
    return (np.round(np.clip(img, 0, 1) * 255) / 255).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Official role (runs in the groundingdino-py Python)
# --------------------------------------------------------------------------------------------------

OFFICIAL_CONFIGS = {"swint_ogc": "GroundingDINO_SwinT_OGC.py", "swinb": "GroundingDINO_SwinB_cfg.py"}


def _official_model(variant: str, bert_dir: str, seed: int = SEED):
    import torch
    import groundingdino
    from groundingdino.models import build_model
    from groundingdino.util import get_tokenlizer
    from groundingdino.util.slconfig import SLConfig
    from transformers import BertConfig, BertModel

    cfg_path = os.path.join(os.path.dirname(groundingdino.__file__), "config", OFFICIAL_CONFIGS[variant])
    args = SLConfig.fromfile(cfg_path)
    args.device = "cpu"
    args.text_encoder_type = bert_dir
    # The official code calls BertModel.from_pretrained(folder); a random BertModel of that config is
    # the same module without needing a weight file.
    get_tokenlizer.get_pretrained_language_model = lambda p: BertModel(BertConfig.from_pretrained(p))
    torch.manual_seed(seed)
    model = build_model(args)
    model.eval()
    return model


def _randomise_(model, seed: int = SEED) -> None:
    """Overwrite every floating parameter with seeded values of a sensible scale."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in name.lower() or name.endswith("gamma_v") or name.endswith("gamma_l")):
                if name.endswith("weight") or "gamma" in name:
                    scale = 0.1 if "gamma" in name else 1.0
                    p.copy_(scale * (1.0 + 0.1 * torch.randn(p.shape, generator=g)))
                else:
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.ndim > 1 else p.numel()
                std = 1.0 if ("level_embed" in name or "tgt_embed" in name or "word_embeddings" in name
                              or "position_embeddings" in name or "token_type" in name
                              or "relative_position_bias_table" in name) else fan_in ** -0.5
                if "relative_position_bias_table" in name:
                    std = 0.5
                if "bbox_embed" in name and ".layers.2." in name:
                    std *= 0.05  # small box refinements: no coordinate saturates (see the README)
                p.copy_(std * torch.randn(p.shape, generator=g))
        # Final decoder norm scaled down so the contrastive logits (hs . text) are O(1): probabilities
        # spread over (0, 1) instead of all saturating, so thresholds and phrase scores mean something.
        model.transformer.decoder.norm.weight.mul_(0.12)
        model.transformer.decoder.norm.bias.mul_(0.12)


def dump_keys(out_file: str) -> None:
    """Write {variant: nested key tree with [shape] leaves} for the official models' state dicts."""
    import tempfile

    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        bert_dir = write_bert_folder(os.path.join(tmp, "bert-base-uncased"))
        for variant in OFFICIAL_CONFIGS:
            model = _official_model(variant, bert_dir)  # CPU: the official Swin calls .item() at build
            tree: dict = {}
            for key, value in model.state_dict().items():
                node = tree
                parts = key.split(".")
                for part in parts[:-1]:
                    node = node.setdefault(part, {})
                node[parts[-1]] = list(value.shape) if value.dtype.is_floating_point else \
                    {"int": list(value.shape)}
            tables[variant] = tree
            del model
    meta = {"_about": "Key -> shape tables of the official IDEA-Research Grounding DINO state dicts "
                      "(groundingdino-py 0.4.0, configs GroundingDINO_SwinT_OGC.py and "
                      "GroundingDINO_SwinB_cfg.py, bert-base-uncased text encoder), written by "
                      "tests/parity/grounding_dino_official.py keys. Keys are nested by '.'; a leaf is "
                      "the shape of a float tensor, or {'int': shape} for an integer buffer."}
    meta.update(tables)
    with open(out_file, "w") as f:
        json.dump(meta, f, separators=(",", ":"))


def official_run(variant: str, out_dir: str, box_threshold: float, text_threshold: float) -> None:
    """Build, randomise and save the official model; record its outputs on the fixed image."""
    import numpy as np
    import torch
    from PIL import Image
    from groundingdino.util.inference import load_image, predict

    os.makedirs(out_dir, exist_ok=True)
    bert_dir = write_bert_folder(os.path.join(out_dir, "bert-base-uncased"))
    model = _official_model(variant, bert_dir)
    _randomise_(model)
    sd = model.state_dict()
    # Real checkpoints come from DistributedDataParallel training: keys prefixed "module.".
    torch.save({"model": {"module." + k: v for k, v in sd.items()}}, os.path.join(out_dir, "official.pth"))

    img = fixed_image()
    np.save(os.path.join(out_dir, "image.npy"), img)
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(os.path.join(out_dir, "image.png"))
    _, pixel = load_image(os.path.join(out_dir, "image.png"))  # the official preprocessing
    caption = caption_of(CAPTION_PHRASES)
    with torch.no_grad():
        out = model(pixel[None], captions=[caption])
    tokenized = model.tokenizer(caption)
    n_tok = len(tokenized["input_ids"])
    prob = out["pred_logits"][0, :, :n_tok].sigmoid()
    if box_threshold < 0:  # automatic: the middle of the widest gap among the top 10..60 scores
        box_threshold = _gap_threshold(prob.max(dim=1).values, 10, 60)
    if text_threshold < 0:  # automatic: a wide gap near the median token probability
        flat = prob.flatten()
        text_threshold = _gap_threshold(flat, flat.numel() // 3, 2 * flat.numel() // 3)
    boxes, logits, phrases = predict(model, pixel, caption, box_threshold, text_threshold, device="cpu")
    torch.save({"pixel_values": pixel, "pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"],
                "input_ids": torch.tensor(tokenized["input_ids"]), "caption": caption,
                "predict_boxes": boxes, "predict_logits": logits, "predict_phrases": phrases,
                "box_threshold": box_threshold, "text_threshold": text_threshold},
               os.path.join(out_dir, "official_outputs.pt"))
    print(f"official: {len(sd)} state-dict entries, {int(boxes.shape[0])} detections "
          f"(box_threshold {box_threshold:.6f}, text_threshold {text_threshold:.6f})")


def _gap_threshold(values, lo: int, hi: int) -> float:
    """Midpoint of the widest gap between consecutive sorted ``values`` at ranks lo..hi (descending),
    so that a threshold is not within float noise of any value."""
    s = values.flatten().sort(descending=True).values
    gaps = s[lo - 1:hi - 1] - s[lo:hi]
    k = int(gaps.argmax()) + lo
    return float((s[k - 1] + s[k]) / 2)


def _main(argv) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keys")
    k.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--variant", default="swint_ogc", choices=sorted(OFFICIAL_CONFIGS))
    r.add_argument("--out", required=True)
    r.add_argument("--box-threshold", type=float, default=-1.0, help="-1: automatic (a wide score gap)")
    r.add_argument("--text-threshold", type=float, default=-1.0, help="-1: automatic (a wide gap)")
    a = parser.parse_args(argv)
    if a.cmd == "keys":
        dump_keys(a.out)
    else:
        official_run(a.variant, a.out, a.box_threshold, a.text_threshold)


if __name__ == "__main__":
    _main(sys.argv[1:])


# --------------------------------------------------------------------------------------------------
# Our role (pytest, in the SwapForge Python)
# --------------------------------------------------------------------------------------------------

def test_loader_reproduces_official_swint_outputs(tmp_path):
    """Official SwinT-OGC (seeded random weights) vs our loader on transformers: raw outputs < 1e-4."""
    import subprocess

    import numpy as np
    import pytest
    import torch

    python = os.environ.get("SWAPFORGE_GDINO_PYTHON")
    if not python:
        pytest.skip("set SWAPFORGE_GDINO_PYTHON to a Python with groundingdino-py and transformers<5")
    out_dir = os.environ.get("SWAPFORGE_GDINO_PARITY_DIR") or str(tmp_path)
    if not os.path.isfile(os.path.join(out_dir, "official_outputs.pt")):
        proc = subprocess.run([python, os.path.abspath(__file__), "run", "--out", out_dir],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:]
        print(proc.stdout.strip().splitlines()[-1])

    from models.partswap import grounding_dino as gd

    ref = torch.load(os.path.join(out_dir, "official_outputs.pt"), weights_only=True)
    model = gd.load_grounding_dino(os.path.join(out_dir, "official.pth"),
                                   os.path.join(out_dir, "bert-base-uncased"))
    assert model.variant == "swint_ogc"
    image = np.load(os.path.join(out_dir, "image.npy"))

    pixel = gd.preprocess_image(image)
    pixel_diff = float((pixel[0] - ref["pixel_values"]).abs().max())
    logits, boxes, enc = model.forward_raw(pixel, ref["caption"])
    assert enc["input_ids"][0].tolist() == ref["input_ids"].tolist()
    n = int(enc["input_ids"].shape[1])
    logit_diff = float((logits[0, :, :n] - ref["pred_logits"][0, :, :n]).abs().max())
    box_diff = float((boxes - ref["pred_boxes"]).abs().max())
    assert torch.isinf(logits[0, :, n:]).all() and torch.isinf(ref["pred_logits"][0, :, n:]).all()
    print(f"\nparity SwinT-OGC: pixel max|diff| {pixel_diff:.3g}, pred_logits max|diff| {logit_diff:.3g} "
          f"(|logits| up to {float(ref['pred_logits'][0, :, :n].abs().max()):.3g}), "
          f"pred_boxes max|diff| {box_diff:.3g}")
    assert pixel_diff == 0.0
    assert logit_diff < 1e-4 and box_diff < 1e-4

    # detect() against the official predict() with the same thresholds
    dets = model.detect(image, CAPTION_PHRASES, box_threshold=ref["box_threshold"],
                        text_threshold=ref["text_threshold"])
    official_scores = ref["predict_logits"]  # predict() returns the max token probability per box
    assert len(dets) == len(official_scores)
    order = torch.argsort(official_scores, descending=True)
    h, w = image.shape[:2]
    for det, i in zip(dets, order.tolist()):
        assert abs(det.score - float(official_scores[i])) < 1e-5
        cx, cy, bw, bh = ref["predict_boxes"][i].tolist()
        expect = np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
        np.testing.assert_allclose(det.box_xyxy, expect, atol=1e-3)
        words = set(ref["predict_phrases"][i].split())
        for p, s in zip(CAPTION_PHRASES, det.phrase_scores):
            assert (s > 0) == any(word in words for word in p.split()), (p, s, words)
    print(f"parity detect(): {len(dets)} detections match the official predict() "
          f"(box_threshold {ref['box_threshold']:.4f}, text_threshold {ref['text_threshold']:.4f})")
