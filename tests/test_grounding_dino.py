"""Official Grounding DINO checkpoints on transformers' GroundingDinoForObjectDetection
(models/partswap/grounding_dino.py).

The key -> shape tables in tests/data/grounding_dino_official_keys.json were written by the official
code (groundingdino-py 0.4.0; `python tests/parity/grounding_dino_official.py keys`). The numerical
proof that the conversion is right is the optional parity check tests/parity/grounding_dino_official.py;
the forward test here checks wiring only (random weights detect arbitrary boxes).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from transformers import BertConfig  # noqa: E402

from models.partswap import grounding_dino as gd  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES = os.path.join(ROOT, "tests", "data", "grounding_dino_official_keys.json")
SMALL_VOCAB = 1100


def _flatten(tree, prefix=""):
    for k, v in tree.items():
        if isinstance(v, dict) and "int" not in v:
            yield from _flatten(v, prefix + k + ".")
        else:
            yield prefix + k, v


def _table(variant):
    with open(TABLES) as f:
        return dict(_flatten(json.load(f)[variant]))


def _swin_relative_position_index(window: int) -> torch.Tensor:
    """Swin's (w*w, w*w) relative-position index (Liu et al. 2021, sec. 3.2), written out directly."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])            # 2, w*w
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # 2, w*w, w*w in 0..2w-2
    return rel[0] * (2 * window - 1) + rel[1]


def _official_dict(table, device="meta", seed=0, keep=lambda k: True, vocab=None):
    """An official-layout state dict from a table: meta tensors, or seeded random CPU tensors."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in table.items():
        if not keep(key):
            continue
        if isinstance(shape, dict):  # integer buffer: Swin relative_position_index
            w = math.isqrt(shape["int"][0])
            sd[key] = (torch.empty(shape["int"], dtype=torch.long, device="meta") if device == "meta"
                       else _swin_relative_position_index(w))
            continue
        if vocab is not None and key == "bert.embeddings.word_embeddings.weight":
            shape = [vocab, shape[1]]
        if device == "meta":
            sd[key] = torch.empty(shape, device="meta")
        elif len(shape) == 1 and re.search(r"norm|LayerNorm", key) and key.endswith("weight"):
            sd[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            fan = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            sd[key] = torch.randn(shape, generator=g) * (0.05 if len(shape) == 1 else fan ** -0.5)
    return sd


import math  # noqa: E402  (used above at call time)


def _write_bert(path, vocab_size=SMALL_VOCAB, words=(), layers=1):
    """A bert-base-uncased-shaped folder (hidden 768) with the real special-token ids."""
    os.makedirs(path, exist_ok=True)
    vocab = [f"[unused{i}]" for i in range(vocab_size)]
    for i, tok in {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]",
                   1012: ".", 1029: "?"}.items():
        vocab[i] = tok
    for i, w in enumerate(words):
        vocab[1040 + i] = w
    with open(os.path.join(path, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    cfg = dict(model_type="bert", vocab_size=vocab_size, hidden_size=768, num_hidden_layers=layers,
               num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
               type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}, f)
    return path


WORDS = ["eye", "##s", "nose", "mouth", "left", "cat"]


def _small_keep(key):
    """The SwinT-OGC layout with one encoder layer, two decoder layers and one BERT layer (the official
    code builds such a model from layer counts; the Swin stays the official Swin-T). Two decoder
    layers, not one: transformers 5.x fails to tie the box heads of a one-layer decoder."""
    for pattern, kept in ((r"^transformer\.encoder\.(layers|text_layers|fusion_layers)\.(\d+)\.", 1),
                          (r"^transformer\.decoder\.layers\.(\d+)\.", 2),
                          (r"^(transformer\.decoder\.)?bbox_embed\.(\d+)\.", 2),
                          (r"^bert\.encoder\.layer\.(\d+)\.", 1)):
        m = re.match(pattern, key)
        if m and int(m.groups()[-1]) >= kept:
            return False
    return True


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """(checkpoint path, BERT folder, official state dict) of the small SwinT-OGC-layout model."""
    d = tmp_path_factory.mktemp("gdino")
    sd = _official_dict(_table("swint_ogc"), device="cpu", keep=_small_keep, vocab=SMALL_VOCAB)
    path = str(d / "groundingdino_small.pth")
    torch.save({"model": {"module." + k: v for k, v in sd.items()}}, path)
    return path, _write_bert(str(d / "bert-base-uncased"), words=WORDS), sd


@pytest.fixture(scope="module")
def small_model(small_checkpoint):
    path, bert, _ = small_checkpoint
    return gd.load_grounding_dino(path, bert)


# ---------------------------------------------------------------- (a) full-size key tables

@pytest.mark.parametrize("variant", ["swint_ogc", "swinb"])
def test_every_official_key_maps_onto_hf_model_with_identical_shapes(variant):
    table = _table(variant)
    sd = {"module." + k: v for k, v in _official_dict(table).items()}  # meta: nothing allocated
    config = gd.config_from_official(sd, BertConfig())
    target = gd._target_shapes(config)
    out = gd.convert_official_state_dict(sd, config, target=target)

    assert gd.swin_variant(gd._strip_prefix(sd))[0] == variant
    assert set(out) == set(target)  # every HF entry filled ...
    for name, tensor in out.items():  # ... with the shape the model expects
        assert tuple(tensor.shape) == tuple(target[name][0]), name
    # every official tensor is used (a split q/k/v part is a view of it), except the documented ones
    used = {id(t._base if t._base is not None else t) for t in out.values()}
    unused = [k for k, t in sd.items() if id(t) not in used]
    allowed = re.compile(r"^module\.(bert\.pooler\.|backbone\.0\..*relative_position_index$)")
    assert unused and all(allowed.match(k) for k in unused), unused
    assert any("pooler" in k for k in unused)
    if any(k.endswith("relative_position_index") for k in target):  # transformers 4.x stores it
        assert not any(k.endswith("relative_position_index") for k in unused)
    # the architecture read from the shapes is the official one
    bb = config.backbone_config
    expected = {"swint_ogc": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7),
                "swinb": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12)}[variant]
    assert (bb.embed_dim, list(bb.depths), list(bb.num_heads), bb.window_size) == expected
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.num_queries,
            config.num_feature_levels, config.encoder_n_points, config.decoder_n_points,
            config.encoder_ffn_dim, config.max_text_len) == (256, 6, 6, 900, 4, 4, 4, 2048, 256)
    assert list(bb.out_features) == ["stage2", "stage3", "stage4"]


def test_conversion_reports_missing_and_unexpected_keys():
    table = _table("swint_ogc")
    sd = _official_dict(table)
    config = gd.config_from_official(sd, BertConfig())
    target = gd._target_shapes(config)
    broken = dict(sd)
    del broken["transformer.decoder.layers.3.linear1.weight"]
    broken["transformer.mystery.weight"] = torch.empty(3, device="meta")
    with pytest.raises(ValueError) as e:
        gd.convert_official_state_dict(broken, config, target=target)
    msg = str(e.value)
    assert "transformer.mystery.weight" in msg and "model.decoder.layers.3.fc1.weight" in msg
    wrong = dict(sd, **{"feat_map.bias": torch.empty(7, device="meta")})
    with pytest.raises(ValueError, match=r"feat_map\.bias \(7,\)"):
        gd.convert_official_state_dict(wrong, config, target=target)


# ---------------------------------------------------------------- (b) hand-checked rules

def test_swin_qkv_and_attention_in_proj_split_into_query_key_value_in_order(small_checkpoint):
    _, _, sd = small_checkpoint
    sd = dict(sd)
    c = 192  # layer 1 of Swin-T: embed 96 * 2
    qkv = torch.arange(3 * c, dtype=torch.float32)[:, None].repeat(1, c)  # row r holds r
    sd["backbone.0.layers.1.blocks.1.attn.qkv.weight"] = qkv
    sd["backbone.0.layers.1.blocks.1.attn.qkv.bias"] = torch.arange(3 * c, dtype=torch.float32)
    in_proj = torch.arange(768, dtype=torch.float32)[:, None].repeat(1, 256)
    sd["transformer.decoder.layers.0.ca_text.in_proj_weight"] = in_proj
    config = gd.config_from_official(sd, BertConfig(vocab_size=SMALL_VOCAB, num_hidden_layers=1))
    out = gd.convert_official_state_dict(sd, config)

    def hf(name4):  # the name in the installed transformers (4.x or 5.x spelling)
        return next(n for n in gd._variants(name4) if n in out)

    base = "model.backbone.conv_encoder.model.encoder.layers.1.blocks.1.attention.self."
    for i, part in enumerate(("query", "key", "value")):
        w = out[hf(base + part + ".weight")]
        assert torch.equal(w[:, 0], torch.arange(i * c, (i + 1) * c, dtype=torch.float32)), part
        assert torch.equal(out[hf(base + part + ".bias")], torch.arange(i * c, (i + 1) * c, dtype=torch.float32))
        t = out[f"model.decoder.layers.0.encoder_attn_text.{part}.weight"]
        assert torch.equal(t[:, 0], torch.arange(i * 256, (i + 1) * 256, dtype=torch.float32)), part
    # backbone.0.norm{i} (return_interm_indices, 0-based) normalises transformers' stage i+1
    assert out["model.backbone.conv_encoder.model.hidden_states_norms.stage2.weight"] is sd["backbone.0.norm1.weight"]
    assert out["model.backbone.conv_encoder.model.hidden_states_norms.stage4.bias"] is sd["backbone.0.norm3.bias"]
    # fusion gammas and the query embedding
    assert out["model.encoder.layers.0.fusion_layer.vision_param"] is sd["transformer.encoder.fusion_layers.0.gamma_v"]
    assert out["model.encoder.layers.0.fusion_layer.text_param"] is sd["transformer.encoder.fusion_layers.0.gamma_l"]
    assert out["model.query_position_embeddings.weight"] is sd["transformer.tgt_embed.weight"]
    assert out["model.decoder.layers.0.encoder_attn_layer_norm.weight"] is sd["transformer.decoder.layers.0.norm1.weight"]
    assert out["model.decoder.layers.0.self_attn_layer_norm.weight"] is sd["transformer.decoder.layers.0.norm2.weight"]


def test_transformers_5_spelling_of_swin_names():
    name = "model.backbone.conv_encoder.model.encoder.layers.2.blocks.4.attention.self.query.weight"
    assert gd._variants(name) == [name, "model.backbone.conv_encoder.model.swin.encoder.layers.2.blocks.4.attention.q_proj.weight"]
    name = "model.backbone.conv_encoder.model.encoder.layers.0.blocks.1.output.dense.bias"
    assert gd._variants(name)[1].endswith(".swin.encoder.layers.0.blocks.1.mlp.fc2.bias")
    assert gd._variants("model.backbone.conv_encoder.model.hidden_states_norms.stage3.weight") == \
        ["model.backbone.conv_encoder.model.hidden_states_norms.stage3.weight"]


def test_resize_follows_official_shorter_side_800_longer_at_most_1333():
    assert gd.resized_size(480, 640) == (800, 1066)   # 640 * 800 / 480 = 1066.67, truncated
    assert gd.resized_size(800, 600) == (1066, 600 * 800 // 600)
    assert gd.resized_size(100, 1000) == (133, 1330)  # 1333 * 100 / 1000 = 133.3 -> shorter side 133
    assert gd.resized_size(800, 1000) == (800, 1000)


# ---------------------------------------------------------------- (c) small forward (wiring only)

def test_small_model_loads_and_detect_returns_well_formed_detections(small_model):
    assert small_model.variant == "swint_ogc"  # the Swin-T backbone is the official one
    cfg = small_model.model.config
    assert (cfg.encoder_layers, cfg.decoder_layers, cfg.text_config.num_hidden_layers) == (1, 2, 1)
    rng = np.random.default_rng(0)
    image = rng.random((150, 200, 3), dtype=np.float32)
    # Random weights: which boxes come out means nothing; thresholds 0 keep every query.
    dets = small_model.detect(image, ["Eyes", "nose", "mouth"], box_threshold=0.0, text_threshold=0.0)
    assert len(dets) == 900
    scores = [d.score for d in dets]
    assert scores == sorted(scores, reverse=True)
    for d in dets[:5]:
        assert d.box_xyxy.shape == (4,) and d.box_xyxy.dtype == np.float32
        assert d.phrase_scores.shape == (3,) and 0.0 < d.phrase_scores.max() <= d.score + 1e-6
        assert d.label == int(np.argmax(d.phrase_scores))
    high = small_model.detect(image, ["eyes"], box_threshold=0.999999, text_threshold=0.25)
    assert all(d.score > 0.999999 for d in high)


# ---------------------------------------------------------------- (d) loader errors

def test_loader_names_file_for_truncated_checkpoint(small_checkpoint, tmp_path):
    path, bert, _ = small_checkpoint
    bad = tmp_path / "groundingdino_swint_ogc.pth"
    with open(path, "rb") as f:
        bad.write_bytes(f.read(1 << 20))
    with pytest.raises(ValueError) as e:
        gd.load_grounding_dino(str(bad), bert)
    msg = str(e.value)
    assert str(bad) in msg and "Apache-2.0" in msg and "IDEA-Research/GroundingDINO" in msg
    assert "ShilongLiu/GroundingDINO" in msg


def test_loader_rejects_a_checkpoint_that_is_not_grounding_dino(small_checkpoint, tmp_path):
    _, bert, _ = small_checkpoint
    other = tmp_path / "sam_vit_b.pth"
    torch.save({"model": {"image_encoder.patch_embed.proj.weight": torch.zeros(2, 3)}}, other)
    with pytest.raises(ValueError) as e:
        gd.load_grounding_dino(str(other), bert)
    assert str(other) in str(e.value) and "image_encoder.patch_embed.proj.weight" in str(e.value)
    assert "groundingdino_swint_ogc.pth" in str(e.value)
    missing = tmp_path / "nothing.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        gd.load_grounding_dino(str(missing), bert)


def test_loader_names_bert_folder_and_what_it_lacks(small_checkpoint, tmp_path):
    path, _, _ = small_checkpoint
    absent = tmp_path / "models" / "bert-base-uncased"
    with pytest.raises(FileNotFoundError) as e:
        gd.load_grounding_dino(path, str(absent))
    assert str(absent) in str(e.value) and "google-bert/bert-base-uncased" in str(e.value)
    partial = tmp_path / "bert-partial"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as e:
        gd.load_grounding_dino(path, str(partial))
    assert str(partial) in str(e.value) and "vocab.txt" in str(e.value)


def test_safetensors_checkpoint_without_bert_keys_takes_bert_from_folder(small_checkpoint, small_model, tmp_path):
    from safetensors.torch import save_file

    _, bert, sd = small_checkpoint
    no_bert = {k: v.contiguous() for k, v in sd.items() if not k.startswith("bert.")}
    ckpt = tmp_path / "gdino.safetensors"
    save_file(no_bert, str(ckpt))
    with pytest.raises(FileNotFoundError) as e:  # folder without weights: say so, name both
        gd.load_grounding_dino(str(ckpt), bert)
    assert str(ckpt) in str(e.value) and bert in str(e.value)
    folder = tmp_path / "bert-with-weights"
    _write_bert(str(folder), words=WORDS)
    save_file({k[len("bert."):]: v.contiguous() for k, v in sd.items() if k.startswith("bert.")},
              str(folder / "model.safetensors"))
    model = gd.load_grounding_dino(str(ckpt), str(folder))
    a = model.model.model.text_backbone.embeddings.word_embeddings.weight
    assert torch.equal(a, sd["bert.embeddings.word_embeddings.weight"])


# ---------------------------------------------------------------- (e) tokenisation

def test_phrase_token_spans_for_eyes_nose_mouth(tmp_path):
    tok = gd.load_tokenizer(_write_bert(str(tmp_path / "bert"), words=WORDS))
    caption, spans = gd.build_caption(["Eyes", "nose", " mouth"])
    assert caption == "eyes . nose . mouth ."
    assert spans == [(0, 4), (7, 11), (14, 19)]
    enc, groups = gd.phrase_token_spans(tok, caption, spans)
    ids = enc["input_ids"]
    v = {w: 1040 + i for i, w in enumerate(WORDS)}
    # [CLS] eye ##s . nose . mouth . [SEP]
    assert ids == [101, v["eye"], v["##s"], 1012, v["nose"], 1012, v["mouth"], 1012, 102]
    assert groups == [[1, 2], [4], [6]]
    _, spans2 = gd.build_caption(["left eye", "cat"])
    enc2, groups2 = gd.phrase_token_spans(tok, "left eye . cat .", spans2)
    assert groups2 == [[1, 2], [4]]


def test_module_imports_without_importing_transformers():
    code = ("import sys; import models.partswap.grounding_dino as g; "
            "print('transformers' in sys.modules, g.Detection.__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "Detection"]


def test_part_detector_encodes_the_prompt_once_per_run(small_model, monkeypatch):
    from models.face.records import FaceSet
    from models.partswap import part_detect
    from synthclip import make_faces, unit_face

    full = gd.preprocess_image
    monkeypatch.setattr(gd, "preprocess_image", lambda img: full(img)[..., ::4, ::4].contiguous())  # speed only
    frames = np.random.default_rng(1).random((2, 150, 200, 3), dtype=np.float32)
    ff = make_faces([unit_face() * 25 + (50, 70), unit_face() * 25 + (150, 70)])   # two faces a frame
    faces = FaceSet([ff, ff], (150, 200))
    calls = []
    backbone = small_model.model.model.text_backbone
    handle = backbone.embeddings.register_forward_hook(lambda *a: calls.append(1))  # BERT actually ran
    try:
        part_detect.detect_parts(frames, faces, small_model, box_threshold=0.0, text_threshold=0.0)
        assert len(calls) == 1 and small_model.text_encodings == 1          # 2 frames x 2 faces, one encoding
        assert "forward" not in vars(backbone)                              # the cache ends with the run
        small_model.detect(frames[0], ["eyes"], 0.0, 0.0)
        assert len(calls) == 2                                              # outside a run: encoded as before
    finally:
        handle.remove()
