"""The nodes as ComfyUI calls them, on real photos and a 12-frame clip with two faceless frames."""
import sys

import numpy as np
import pytest
import torch

from synthclip import make_clip, photo

NO_FACE = (4, 9)


@pytest.fixture(scope="module")
def clip():
    return torch.from_numpy(make_clip("obama.jpg", 12, NO_FACE))


@pytest.fixture(scope="module")
def clip_faces(N, fm, clip):
    # every frame detected: the grey frames stand for frames where the detector lost the face (the video
    # tracker would see cuts there and start new ids: tests/test_video_faces.py)
    return N["SwapForge_DetectFaces"]().detect(fm, clip, 0.5, 32, 0, "largest_first", "detect every frame")


def t(name):
    return torch.from_numpy(photo(name))[None]


def test_detect_node_counts_one_face_per_frame_except_the_faceless_ones(clip_faces, clip):
    faces, preview, counts, report = clip_faces
    assert counts == [0 if i in NO_FACE else 1 for i in range(12)]
    assert len(faces) == 12 and preview.shape == clip.shape and preview.dtype == torch.float32
    assert "frame 4: 0 face(s)" in report
    # the preview draws on frames with faces and leaves faceless frames as they were
    assert torch.equal(preview[4], clip[4]) and not torch.equal(preview[0], clip[0])


def test_the_video_tracker_keeps_cut_frames_empty_and_starts_new_ids_after_them(N, fm, clip):
    faces, _, counts, report = N["SwapForge_DetectFaces"]().detect(fm, clip, 0.5, 32, 0, "largest_first")
    assert counts == [0 if i in NO_FACE else 1 for i in range(12)]
    assert [int(ff.track_ids[0]) for ff in faces.frames if len(ff)] == [0] * 4 + [1] * 4 + [2] * 2
    assert "frame 4: 0 face(s), detected (cut)" in report
    tracked, _ = N["SwapForge_TrackFaces"]().track(faces, 0.3, 5, 0.5)
    assert tracked.counts() == counts  # nothing is invented across a cut


def test_every_node_keeps_the_twelve_frames(N, fm, clip, clip_faces):
    faces = clip_faces[0]
    tracked, report = N["SwapForge_TrackFaces"]().track(faces, 0.3, 5, 0.5)
    assert len(tracked) == 12
    # the two short gaps are filled by interpolation and flagged
    for i in NO_FACE:
        assert len(tracked.frames[i]) == 1 and bool(tracked.frames[i].interpolated[0])
    sel = N["SwapForge_SelectFaces"]().select(faces, "index", "0", 0.0)[0]
    assert len(sel) == 12
    crops, info, masks = N["SwapForge_AlignCrop"]().crop(clip, faces, "256", "ffhq")
    assert crops.shape == (12, 256, 256, 3) and masks.shape == (12, 256, 256) and len(info) == 12
    assert [c.valid for c in info.crops] == [i not in NO_FACE for i in range(12)]
    pasted, pmask = N["SwapForge_PasteBack"]().paste(clip, crops, info, 4, 8, "none", masks)
    assert pasted.shape == clip.shape and pmask.shape == clip.shape[:3]
    for i in NO_FACE:  # faceless frames pass through unchanged
        assert torch.equal(pasted[i], clip[i]) and float(pmask[i].max()) == 0.0
    parts = N["SwapForge_FaceParts"]().parts(clip, faces, -1, 0.15, 0.1)
    assert len(parts[0].frames) == 12 and all(m.shape == clip.shape[:3] for m in parts[1:4])
    out, mask, status = N["SwapForge_ClassicPartSwap"]().swap(
        fm, clip, "alpha", "rgb", 0, 0.15, 0.1, eyes_source=t("biden.jpg"), target_faces=faces)
    assert out.shape == clip.shape
    lines = status.splitlines()
    assert len(lines) == 12 and all(("no face" in lines[i]) == (i in NO_FACE) for i in range(12))
    for i in NO_FACE:
        assert torch.equal(out[i], clip[i])
    sims, summary = N["SwapForge_IdentitySimilarity"]().compare(
        fm, clip, N["SwapForge_BuildIdentity"]().build(fm, t("obama2.jpg"), "obama")[0], faces)
    assert len(sims) == 12 and all(sims[i] == 0.0 for i in NO_FACE)
    assert min(s for i, s in enumerate(sims) if i not in NO_FACE) > fm.same_person_cosine


def test_align_then_paste_of_unchanged_crops_is_bit_identical_outside_the_mask(N, fm):
    img = t("astronaut.jpg")
    faces = N["SwapForge_DetectFaces"]().detect(fm, img, 0.5, 32, 0, "largest_first")[0]
    crops, info, masks = N["SwapForge_AlignCrop"]().crop(img, faces, "512", "ffhq")
    out, mask = N["SwapForge_PasteBack"]().paste(img, crops, info, 0, 0, "none", masks)
    outside = (mask[0] == 0).numpy()
    assert outside.mean() > 0.5
    assert np.array_equal(out[0].numpy()[outside], img[0].numpy()[outside])
    inside = (mask[0] > 0.99).numpy()
    assert np.abs(out[0].numpy()[inside] - img[0].numpy()[inside]).mean() < 0.01


def test_identity_round_trips_through_save_and_load_nodes(N, fm, tmp_path, monkeypatch):
    services = sys.modules["swapforge.nodes.services"]
    monkeypatch.setenv("SWAPFORGE_MODELS_DIR", str(tmp_path))
    padded = torch.nn.functional.pad(t("obama2.jpg"), (0, 0, 0, 410 - 267), value=0.5)  # to obama.jpg's size
    ident, report = N["SwapForge_BuildIdentity"]().build(fm, torch.cat([t("obama.jpg"), padded]), "obama")
    assert "2 of 2" in report
    N["SwapForge_SaveIdentity"]().save(ident, "obama", False)
    with pytest.raises(FileExistsError, match="overwrite"):
        N["SwapForge_SaveIdentity"]().save(ident, "obama", False)
    assert "obama.safetensors" in N["SwapForge_LoadIdentity"].INPUT_TYPES()["required"]["name"][0]
    loaded = N["SwapForge_LoadIdentity"]().load("obama.safetensors")[0]
    assert np.array_equal(loaded.embedding, ident.embedding) and loaded.backend == ident.backend
    with pytest.raises(FileNotFoundError, match="Save Identity"):
        N["SwapForge_LoadIdentity"]().load("nobody.safetensors")
    assert services.default_folder("swapforge_identities").startswith(str(tmp_path))


def test_bad_inputs_give_clear_errors(N, fm, clip_faces):
    faces = clip_faces[0]
    with pytest.raises(ValueError, match="12 frame"):  # faces of a 12-frame clip, a 1-frame image
        N["SwapForge_AlignCrop"]().crop(t("obama.jpg"), faces, "256", "ffhq")
    with pytest.raises(ValueError, match="no source"):
        N["SwapForge_ClassicPartSwap"]().swap(fm, t("obama.jpg"), "poisson", "rgb", 0, 0.15, 0.1)
    grey = torch.full((1, 128, 128, 3), 0.5)
    with pytest.raises(ValueError, match="no face found in the eyes source"):
        N["SwapForge_ClassicPartSwap"]().swap(fm, t("obama.jpg"), "poisson", "rgb", 0, 0.15, 0.1, eyes_source=grey)
    with pytest.raises(ValueError, match="identity mode needs"):
        N["SwapForge_SelectFaces"]().select(faces, "identity", "0", 0.0)
    with pytest.raises(ValueError):
        N["SwapForge_DetectFaces"]().detect(fm, torch.zeros((0, 64, 64, 3)), 0.5, 32, 0, "largest_first")
    nan = t("obama.jpg").clone()
    nan[0, 10, 10, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN|nan"):
        N["SwapForge_DetectFaces"]().detect(fm, nan, 0.5, 32, 0, "largest_first")


def test_grey_and_tiny_images_have_no_faces_and_pass_through_the_swap(N, fm):
    for img in (torch.full((2, 96, 96, 3), 0.5), torch.rand((1, 16, 16, 3))):
        faces, preview, counts, _ = N["SwapForge_DetectFaces"]().detect(fm, img, 0.5, 32, 0, "largest_first")
        assert counts == [0] * len(img)
        out, mask, status = N["SwapForge_ClassicPartSwap"]().swap(
            fm, img, "poisson", "rgb", 0, 0.15, 0.1, mouth_source=t("biden.jpg"), target_faces=faces)
        assert torch.equal(out, img) and float(mask.max()) == 0.0 and "no face" in status
