"""StyleSwap training loop (models/styleswap/train.py) on the bundled real photos, on the CPU.

The tiny swappers here are real :class:`Swapper` objects end to end: the real IR-SE50 + FPN
``StyleEncoder`` (16 channels, built for a 64 px input, so its pyramid is 4/8/16 px and the swapper
resizes faces to 64 px for it), SBM, StyleGAN2 decoder, shortcut and checkpoint format. 120 steps of
batch 4 take about 75 s on a busy 2-core CPU and cut both losses to about a fifth.
"""
import json
import os
import shutil
import time

import numpy as np
import pytest
import torch

from models.styleswap import swapper as swapper_mod
from models.styleswap import train as T
from models.styleswap.arcface import TinyIdentityNet
from models.styleswap.discriminator import MultiScaleDiscriminator
from models.styleswap.landmarks import HeatmapLandmarks

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

SIZE = 32
STEPS = 120
RESUME_FROM = 110
ENCODER_INPUT = 64
SWAPPER = dict(size=SIZE, style_dim=32, n_mlp=2, channel_multiplier=1, encoder_channels=16, sbm_layers=2,
               sbm_heads=2, generator_channels={4: 32, 8: 32, 16: 32, 32: 16}, encoder_input_size=ENCODER_INPUT)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these tiny ops run 4-5x faster on a busy 2-core machine without thread
    hand-offs (restored after the module)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def aligned_photos(tmp_path_factory):
    """The six test photos FFHQ-aligned at 64 px with the pack's dlib tools (train.align_folder), in two
    identity folders: obama (3 photos) and others (biden, grace_hopper, astronaut)."""
    root = tmp_path_factory.mktemp("styleswap_photos")
    src, dst = root / "raw", root / "aligned"
    for group, names in (("obama", ("obama", "obama2", "obama3")),
                         ("others", ("biden", "grace_hopper", "astronaut"))):
        (src / group).mkdir(parents=True)
        for n in names:
            shutil.copy(os.path.join(DATA_DIR, f"{n}.jpg"), src / group / f"{n}.jpg")
    skipped = T.align_folder(str(src), str(dst), 64)
    assert skipped == []
    return str(dst)


def make_models(seed=0):
    """Tiny swapper and discriminator (initialised from ``seed``) and the frozen F_id, F_lm (always the
    same: like ArcFace weights, they come from outside the training checkpoint)."""
    torch.manual_seed(seed)
    sw = swapper_mod.Swapper(**SWAPPER)
    disc = MultiScaleDiscriminator(num_scales=2, base_channels=8, n_layers=2, size=SIZE)
    torch.manual_seed(1000)
    idm = TinyIdentityNet(channels=8, embedding_dim=32, input_size=24)
    lm = HeatmapLandmarks(channels=8, depth=1)
    return sw, disc, idm, lm


def config(data, out, **kw):
    base = dict(data=data, out=out, size=SIZE, steps=STEPS, stage=1, batch=4, lr=1e-3, ckpt_every=RESUME_FROM,
                seed=3, p_start=1.0, p_end=0.5, quiet=True)
    base.update(kw)
    return T.TrainConfig(**base)


def read_log(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def trained(aligned_photos, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("styleswap_run"))
    sw, disc, idm, lm = make_models()
    t0 = time.time()
    result = T.train(config(aligned_photos, out), sw, disc, idm, lm)
    return dict(out=out, result=result, swapper=sw, disc=disc, seconds=time.time() - t0)


def test_dataset_groups_identities_by_folder_and_by_file_name_prefix(aligned_photos, tmp_path):
    ds = T.FaceFolder(aligned_photos, SIZE)
    assert ds.names == ["obama", "others"] and sorted(ds.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert ds.images.shape == (6, 3, SIZE, SIZE) and ds.images.min() >= -1 and ds.images.max() <= 1
    assert T.identity_of(str(tmp_path / "obama2.png"), str(tmp_path)) == "obama"
    assert T.identity_of(str(tmp_path / "grace_hopper.png"), str(tmp_path)) == "grace"
    assert T.identity_of(str(tmp_path / "p1" / "x_3.png"), str(tmp_path)) == "p1"


def test_pairs_follow_the_curriculum_probability():
    g = torch.Generator().manual_seed(0)
    src, tgt, same, flips = T.sample_pairs(10, 4000, 0.25, g)
    assert torch.equal(same, src == tgt)
    assert abs(same.float().mean().item() - 0.25) < 0.03
    assert torch.equal(flips[same, 0], flips[same, 1])
    _, _, same1, _ = T.sample_pairs(10, 100, 1.0, g)
    _, _, same0, _ = T.sample_pairs(10, 100, 0.0, g)
    assert same1.all() and not same0.any()


def test_stages_train_encoder_and_sbm_then_the_decoder():
    sw, _, _, _ = make_models()
    p1 = {id(p) for p in T.stage_parameters(sw, 1)}
    assert all(id(p) in p1 for p in sw.encoder.parameters()) and all(id(p) in p1 for p in sw.sbm.parameters())
    assert not any(id(p) in p1 for p in sw.decoder.parameters())
    p2 = {id(p) for p in T.stage_parameters(sw, 2)}
    assert not any(id(p) in p2 for p in sw.encoder.parameters()) and not any(id(p) in p2 for p in sw.sbm.parameters())
    assert all(id(p) in p2 for p in sw.decoder.convs.parameters())
    assert not any(id(p) in p2 for p in sw.decoder.style.parameters())  # mapping net: unused


def test_training_reduces_reconstruction_and_swap_consistency(trained):
    log = read_log(trained["result"]["log"])
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    rec = [r["rec"] for r in log]
    swap = [r["swap"] for r in log]
    first_rec = np.mean([v for v in rec[:20] if v is not None])
    last_rec = np.mean([v for v in rec[-20:] if v is not None])
    first_swap, last_swap = np.mean(swap[:20]), np.mean(swap[-20:])
    print(f"rec {first_rec:.4f} -> {last_rec:.4f}, swap {first_swap:.4f} -> {last_swap:.4f}, "
          f"{trained['seconds']:.1f} s for {STEPS} steps")
    assert last_rec < 0.7 * first_rec
    assert last_swap < 0.7 * first_swap
    assert all(np.isfinite(r["g"]) and np.isfinite(r["d"]) for r in log)
    assert {"adv", "id", "con", "lm", "swap"} <= set(log[0])
    assert log[0]["p_same"] == 1.0 and log[-1]["p_same"] == pytest.approx(0.5 + 0.5 / STEPS)


def test_resume_from_a_mid_checkpoint_is_bit_identical(trained, aligned_photos, tmp_path):
    out = str(tmp_path)
    shutil.copy(os.path.join(trained["out"], f"ckpt_{RESUME_FROM:06d}.pt"), out)
    sw, disc, idm, lm = make_models(seed=123)  # different init: everything must come from the checkpoint
    T.train(config(aligned_photos, out, resume=True), sw, disc, idm, lm)
    full = torch.load(os.path.join(trained["out"], f"ckpt_{STEPS:06d}.pt"), weights_only=True)
    resumed = torch.load(os.path.join(out, f"ckpt_{STEPS:06d}.pt"), weights_only=True)
    for part in ("swapper", "discriminator"):
        assert full[part].keys() == resumed[part].keys()
        for k in full[part]:
            assert torch.equal(full[part][k], resumed[part][k]), (part, k)
    for k, v in full["opt_g"]["state"].items():
        assert torch.equal(v["exp_avg"], resumed["opt_g"]["state"][k]["exp_avg"])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]
    assert strip(read_log(os.path.join(out, "log.jsonl"))) == strip(read_log(trained["result"]["log"])[RESUME_FROM:])


def test_swapper_safetensors_reloads_with_load_swapper_and_gives_the_same_output(trained, aligned_photos):
    from models.styleswap.checkpoints import load_swapper, read_metadata

    path = os.path.join(trained["out"], "swapper.safetensors")
    assert read_metadata(path)["train_step"] == str(STEPS)
    loaded = load_swapper(path)
    sw = trained["swapper"].eval()
    ds = T.FaceFolder(aligned_photos, SIZE)
    with torch.no_grad():
        a, wa = sw(ds.images[:3], ds.images[3:])
        b, wb = loaded(ds.images[:3], ds.images[3:])
    assert torch.equal(a, b) and torch.equal(wa, wb)


def test_command_line_parses_the_documented_options():
    cfg = T.parse_args(["--data", "d", "--out", "o", "--size", "64", "--steps", "7", "--stage", "2", "--batch", "2",
                        "--lr", "1e-4", "--resume", "--tiny", "--lambda-lm", "0"])
    assert (cfg.size, cfg.steps, cfg.stage, cfg.batch, cfg.lr, cfg.resume, cfg.tiny) == (64, 7, 2, 2, 1e-4, True, True)
    assert cfg.weights == {"lm": 0.0}
    assert T.parse_args(["--data", "d", "--out", "o"]).lr == 4e-5
