"""Identity: dlib embeddings of the real photos, identities, similarity, saving and face selection."""
import itertools

import numpy as np
import pytest

from models.face.detect import DlibAnalyzer, FaceAnalyzer, to_uint8
from models.face.identity import (build_identity, cosine_similarity, embed_faceset, load_identity,
                                  parse_index_spec, save_identity, select_by_identity, select_by_index,
                                  similarity_per_frame, similarity_summary)
from models.face.records import FaceSet, FrameFaces, Identity


def pad_batch(images):
    """Stack images of different sizes into one batch by padding right/bottom with grey (coordinates of
    the original pixels do not change, so cached detections stay valid)."""
    h = max(i.shape[0] for i in images)
    w = max(i.shape[1] for i in images)
    out = np.full((len(images), h, w, 3), 0.5, np.float32)
    for k, im in enumerate(images):
        out[k, :im.shape[0], :im.shape[1]] = im
    return out


def cached_faceset(photo_faces, names, size, backend="dlib_mmod"):
    return FaceSet([photo_faces(n) for n in names], size, backend)


def box_faces(boxes):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    return FrameFaces(boxes, np.ones(n), np.zeros((n, 5, 2)), np.zeros((n, 68, 2)))


class FakeAnalyzer(FaceAnalyzer):
    """Embeds a face as a fixed vector chosen by its box's x0 (lookup table); detects fixed faces."""

    def __init__(self, table, detections=None, name="fake", dim=3):
        self.table = {k: np.asarray(v, np.float32) for k, v in table.items()}
        self.detections = detections or []
        self.name, self.embedding_dim, self.same_person_cosine = name, dim, 0.9
        self.detect_calls = 0

    def detect(self, image_u8):
        self.detect_calls += 1
        return self.detections[self.detect_calls - 1]

    def embed(self, image_u8, faces):
        e = np.stack([self.table[int(x0)] for x0 in faces.boxes[:, 0]]) if len(faces) else np.zeros((0, 3))
        return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------- real photos

@pytest.fixture(scope="module")
def photo_embeddings(photo, photo_faces, dlib_analyzer):
    names = ("obama", "obama2", "obama3", "biden", "grace_hopper", "astronaut")
    return {n: dlib_analyzer.embed(to_uint8(photo(n)), photo_faces(n))[0] for n in names}


def test_dlib_embeddings_are_unit_128d(photo_embeddings):
    for e in photo_embeddings.values():
        assert e.shape == (128,) and e.dtype == np.float32
        assert abs(float(np.linalg.norm(e)) - 1.0) < 1e-5


def test_same_person_pairs_rank_above_every_different_person_pair(photo_embeddings, dlib_analyzer):
    obamas = {"obama", "obama2", "obama3"}
    same, diff = [], []
    for a, b in itertools.combinations(photo_embeddings, 2):
        cos = float(np.dot(photo_embeddings[a], photo_embeddings[b])) / float(
            np.linalg.norm(photo_embeddings[a]) * np.linalg.norm(photo_embeddings[b]))
        (same if a in obamas and b in obamas else diff).append(cos)
    assert len(same) == 3 and len(diff) == 12
    assert min(same) > max(diff)
    assert min(same) > dlib_analyzer.same_person_cosine > max(diff)


def test_identity_from_two_obama_photos_matches_third_and_rejects_biden(photo, photo_faces, dlib_analyzer):
    refs = pad_batch([photo("obama"), photo("obama2")])
    fs = cached_faceset(photo_faces, ["obama", "obama2"], refs.shape[1:3])
    ident = build_identity(dlib_analyzer, refs, fs, name="obama")
    assert ident.num_images == 2 and ident.backend == "dlib_mmod" and ident.name == "obama"
    assert abs(float(np.linalg.norm(ident.embedding)) - 1.0) < 1e-5

    probes = pad_batch([photo("obama3"), photo("biden")])
    pfs = cached_faceset(photo_faces, ["obama3", "biden"], probes.shape[1:3])
    ticks = []
    scores, best = similarity_per_frame(dlib_analyzer, probes, pfs, ident, progress=lambda: ticks.append(1))
    assert best == [0, 0] and len(ticks) == 2
    assert scores[0] > dlib_analyzer.same_person_cosine > scores[1]
    text = similarity_summary(scores, best, ident, dlib_analyzer)
    assert "1 of 2" in text and "without a face: 0" in text

    picked = select_by_identity(dlib_analyzer, probes, pfs, ident, dlib_analyzer.same_person_cosine)
    assert picked.counts() == [1, 0]

    # the HOG analyzer uses the same recognition model: an MMOD identity is accepted there
    hog = DlibAnalyzer("hog")
    s2, _ = similarity_per_frame(hog, probes, pfs, ident)
    np.testing.assert_allclose(s2, scores, atol=1e-6)


# ------------------------------------------------------------------------------- logic on a fake

def test_build_identity_uses_largest_face_skips_faceless_images_and_renormalises_mean():
    table = {0: [1, 0, 0], 10: [0, 0, 5], 20: [0, 1, 0]}
    dets = [box_faces([[0, 0, 50, 50], [10, 0, 20, 10]]),  # largest: x0 = 0
            FrameFaces.empty(),
            box_faces([[10, 0, 20, 10], [20, 0, 90, 90]])]  # largest: x0 = 20
    fake = FakeAnalyzer(table, dets)
    ticks = []
    ident = build_identity(fake, np.zeros((3, 100, 100, 3), np.float32), progress=lambda: ticks.append(1))
    assert fake.detect_calls == 3 and len(ticks) == 3 and ident.num_images == 2 and ident.backend == "fake"
    np.testing.assert_allclose(ident.embedding, [np.sqrt(0.5), np.sqrt(0.5), 0], atol=1e-6)


def test_build_identity_without_any_face_names_image_count():
    fake = FakeAnalyzer({}, [FrameFaces.empty()] * 4)
    with pytest.raises(ValueError, match="any of the 4 reference image"):
        build_identity(fake, np.zeros((4, 40, 40, 3), np.float32))


def test_cosine_similarity_matches_direct_formula():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=7)
    ref = [float(np.dot(r, b) / np.sqrt(np.dot(r, r) * np.dot(b, b))) for r in a]
    np.testing.assert_allclose(cosine_similarity(a, b), ref, rtol=1e-5)


def test_similarity_per_frame_gives_zero_and_minus_one_for_faceless_frames():
    table = {0: [1, 0, 0], 30: [0.6, 0.8, 0], 60: [0, 0, 1]}
    fake = FakeAnalyzer(table)
    fs = FaceSet([box_faces([[0, 0, 9, 9], [30, 0, 39, 9]]), FrameFaces.empty(), box_faces([[60, 0, 69, 9],
                                                                                          [30, 0, 39, 9]])],
                 (100, 100), "fake")
    ident = Identity(np.array([0, 1, 0], np.float32), "fake")
    scores, best = similarity_per_frame(fake, np.zeros((3, 100, 100, 3), np.float32), fs, ident)
    np.testing.assert_allclose(scores, [0.8, 0.0, 0.8], atol=1e-6)
    assert best == [1, -1, 1]
    text = similarity_summary(scores, best, ident, fake)
    assert "without a face: 1" in text and "0 of 3" in text


def test_similarity_rejects_identity_of_another_backend_naming_both():
    fake = FakeAnalyzer({}, name="insightface/buffalo_l", dim=3)
    fs = FaceSet([FrameFaces.empty()], (10, 10))
    for ident in (Identity(np.ones(128), "dlib_mmod"), Identity(np.ones(3), "dlib_hog")):
        with pytest.raises(ValueError) as e:
            similarity_per_frame(fake, np.zeros((1, 10, 10, 3), np.float32), fs, ident)
        assert "insightface/buffalo_l" in str(e.value) and ident.backend in str(e.value)


def test_embed_faceset_returns_one_array_per_frame():
    fake = FakeAnalyzer({0: [3, 4, 0]})
    fs = FaceSet([box_faces([[0, 0, 5, 5]]), FrameFaces.empty()], (10, 10))
    out = embed_faceset(fake, np.zeros((2, 10, 10, 3), np.float32), fs)
    assert [e.shape for e in out] == [(1, 3), (0, 3)]
    np.testing.assert_allclose(out[0][0], [0.6, 0.8, 0], atol=1e-6)


def test_select_by_identity_best_only_or_all_above_threshold_ordered_by_similarity():
    table = {0: [1, 0, 0], 30: [0.8, 0.6, 0], 60: [0.95, 0.312, 0], 90: [0, 1, 0]}
    fake = FakeAnalyzer(table)
    fs = FaceSet([box_faces([[0, 0, 9, 9], [30, 0, 39, 9], [60, 0, 69, 9], [90, 0, 99, 9]]),
                  box_faces([[90, 0, 99, 9]]), FrameFaces.empty()], (100, 100), "fake")
    ident = Identity(np.array([1, 0, 0], np.float32), "fake")
    imgs = np.zeros((3, 100, 100, 3), np.float32)
    best = select_by_identity(fake, imgs, fs, ident, 0.7)
    assert best.counts() == [1, 0, 0] and best.frames[0].boxes[0, 0] == 0
    many = select_by_identity(fake, imgs, fs, ident, 0.7, best_only=False)
    assert len(many) == 3 and many.frames[0].boxes[:, 0].tolist() == [0, 60, 30]


# -------------------------------------------------------------------------------- save / load

def test_save_load_identity_round_trip_is_exact(tmp_path):
    emb = np.random.default_rng(3).normal(size=128).astype(np.float32)
    ident = Identity(emb / np.linalg.norm(emb), "dlib_mmod", 3, "Grace")
    path = str(tmp_path / "sub" / "grace.safetensors")
    save_identity(ident, path)
    back = load_identity(path)
    np.testing.assert_array_equal(back.embedding, ident.embedding)
    assert (back.backend, back.num_images, back.name) == ("dlib_mmod", 3, "Grace")

    from safetensors import safe_open
    with safe_open(path, framework="np") as f:
        assert f.metadata()["format"] == "swapforge_identity_v1" and list(f.keys()) == ["embedding"]


def test_load_identity_rejects_files_that_are_not_identities_naming_path(tmp_path):
    from safetensors.numpy import save_file

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    other = tmp_path / "lora.safetensors"
    save_file({"embedding": np.zeros(4, np.float32)}, str(other), metadata={"format": "pt"})
    for p in (junk, other):
        with pytest.raises(ValueError) as e:
            load_identity(str(p))
        assert str(p) in str(e.value) and "swapforge_identity_v1" in str(e.value)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_identity(str(tmp_path / "missing.safetensors"))


# ------------------------------------------------------------------------------ index selection

@pytest.mark.parametrize("spec, expected", [("all", None), (" ALL ", None), ("", None), ("0", [0]),
                                            ("0,2", [0, 2]), ("2, 0", [2, 0]), ("0-2", [0, 1, 2]),
                                            (" 1 - 3 , 0 ", [1, 2, 3, 0]), ("1,1,0-1", [1, 0])])
def test_parse_index_spec_reads_lists_and_ranges(spec, expected):
    assert parse_index_spec(spec) == expected


@pytest.mark.parametrize("spec", ["first", "0;2", "-1", "3-1", "1,,2", "0-", "1.5"])
def test_parse_index_spec_rejects_bad_text_with_an_example(spec):
    with pytest.raises(ValueError, match='"0,2"'):
        parse_index_spec(spec)


def test_select_by_index_keeps_every_frame_and_the_spec_order():
    f3 = box_faces([[0, 0, 1, 1], [10, 0, 11, 1], [20, 0, 21, 1]])
    f1 = box_faces([[5, 0, 6, 1]])
    fs = FaceSet([f3, f1, FrameFaces.empty()], (50, 50), "x")
    out = select_by_index(fs, "2,0")
    assert len(out) == 3 and out.backend == "x"
    assert [f.boxes[:, 0].tolist() for f in out.frames] == [[20, 0], [5], []]
    out = select_by_index(fs, "1-5")
    assert [f.boxes[:, 0].tolist() for f in out.frames] == [[10, 20], [], []]
    assert select_by_index(fs, "all").counts() == [3, 1, 0]
