"""The embedded I_gen route (paper step 2, without a generative model): the source head carried to each target
frame's head pose and expression, colour-matched and composited over the target's background Î_tgt.

Per target frame t (headpose.py gives the poses R_t, t_t and the lifted 68-point face shapes Q):
1. Driven landmarks: the source's identity shape plus the target's motion, Q_src + (Q_tgt(t) - Q_tgt_ref)
   (Q_tgt_ref the median of the target's shapes over the clip, its neutral face), with the lips and eyelids
   taking the target's own shape around their anchors (`drive_shapes`), posed with the target's pose and
   projected: p_drv(t) = pi(R_t Q_drv(t) + t_t). The face keeps the source's proportions and takes the
   target's pose, mouth and eyes.
2. Head ring: points around the source head (hair, ears, neck) lifted onto the plane through the head centre
   parallel to the face plane and posed the same way, so the hair follows the head with the right parallax.
3. Piecewise-affine warp of the source photo (and its head mask) over a Delaunay triangulation of the source's
   landmarks + ring, triangles drawn far to near in the target camera.
4. Mouth: the target's own mouth (lips, teeth, tongue: the expression) is carried onto the driven lips and
   blended into the source's skin around them (`mouth_patch`, the default): a source photographed with a closed
   or smiling mouth has no open, talking mouth to show. With mouth="source" the source's lips are warped
   instead, and only where the target's mouth is open its inner-mouth pixels are carried in.
5. Colour: the source's skin statistics (Lab mean and spread inside the face) moved towards the target's,
   computed once per clip (`ColourTransfer`), by `strength`.
6. I_gen = A * warped + (1 - A) * Î_tgt, with A the warped source head mask (A_gen).

Frames where the target face is missing pass through unchanged (I_gen = target frame, A_gen = 0) and are
flagged. Large head turns (beyond about 45 degrees of yaw) fold triangles over: the warp is a 2D approximation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np

from . import headpose
from .source import SourceSet

INNER_MOUTH = list(range(60, 68))


# ------------------------------------------------------------------------------------------- geometry

EXPRESSION_GROUPS = (  # (points whose shape is the target's, the points they are anchored to)
    (list(range(48, 68)), [48, 54]),   # lips: mouth corners
    ([37, 38, 40, 41], [36, 39]),      # right eye lids (image left): eye corners
    ([43, 44, 46, 47], [42, 45]),      # left eye lids
)


def _iod(shape: np.ndarray) -> np.ndarray:
    return np.linalg.norm(shape[..., 36:42, :].mean(-2) - shape[..., 42:48, :].mean(-2), axis=-1)


def drive_shapes(source_shape: np.ndarray, target_shapes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Driven shapes Q_drv [T, 68, 3] (model mm) from the source's shape [68, 3] and the target's per-frame shapes.

    Every point first takes the source's position plus the target's motion from its neutral face,
    Q_src + (Q_tgt(t) - Q_ref) (Q_ref: the median over valid frames): jaw line, brows and nose keep the source's
    proportions and follow the target. The lips and eyelids, which carry the expression, then take the target's
    own shape around their anchors (mouth corners, eye corners), scaled by the ratio of the faces' inter-ocular
    distances: a source photographed smiling still gets the target's mouth, and the output's mouth opening,
    mouth width and eye openings per inter-ocular distance are the target's."""
    ref = np.median(target_shapes[valid], axis=0) if valid.any() else headpose.FACE_MODEL68
    drv = source_shape[None] + (target_shapes - ref[None])
    scale = float(_iod(source_shape) / max(float(_iod(ref)), 1e-6))
    for group, anchors in EXPRESSION_GROUPS:
        a_tgt = target_shapes[:, anchors].mean(1, keepdims=True)
        a_drv = drv[:, anchors].mean(1, keepdims=True)
        drv[:, group] = a_drv + (target_shapes[:, group] - a_tgt) * scale
    return drv


def ring_points(lm: np.ndarray, neck_line: float = 0.35, n: int = 18) -> np.ndarray:
    """[n + 2, 2] image points around a head (ellipse from above the hair to below the chin, reaching past the
    ears) plus two at the bottom corners of the neck, from its 68 landmarks."""
    eyes = 0.5 * (lm[36:42].mean(0) + lm[42:48].mean(0))
    chin = lm[8]
    up = eyes - chin
    h = np.linalg.norm(up)
    up = up / max(h, 1e-6)
    right = np.array([-up[1], up[0]])
    if right @ (lm[16] - lm[0]) < 0:
        right = -right
    w = np.linalg.norm(lm[16] - lm[0])
    centre = eyes + up * 0.3 * h
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ring = centre + np.cos(a)[:, None] * right * 1.05 * w + np.sin(a)[:, None] * up * 1.75 * h
    neck = chin - up * (neck_line + 0.25) * h
    return np.concatenate([ring, [neck + right * 0.55 * w, neck - right * 0.55 * w]])


def lift_to_plane(points: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray, z_mm: float) -> np.ndarray:
    """Image points [P, 2] -> model coordinates [P, 3] on the model plane z = z_mm (camera rays cut with it)."""
    rays = np.concatenate([points, np.ones((len(points), 1))], 1) @ np.linalg.inv(K).T
    normal = R[:, 2]
    anchor = R @ np.array([0.0, 0.0, z_mm]) + t
    s = (anchor @ normal) / np.where(np.abs(rays @ normal) > 1e-9, rays @ normal, 1e-9)
    return (rays * s[:, None] - t) @ R


def project(points: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Model points [P, 3] -> (pixels [P, 2], camera depth [P])."""
    cam = points @ R.T + t
    z = np.maximum(cam[:, 2], 1e-6)
    return cam[:, :2] / z[:, None] * np.array([K[0, 0], K[1, 1]]) + K[:2, 2], z


def triangulate(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles [K, 3] of 2D points."""
    from scipy.spatial import Delaunay

    return Delaunay(points).simplices.astype(np.int64)


def piecewise_affine(image: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray, tris: np.ndarray,
                     out_shape, depth: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Warp `image` ([h, w] or [h, w, C] float32) so that each triangle of src_pts lands on the same triangle of
    dst_pts. Backward mapping: every output pixel inside a destination triangle samples the source through that
    triangle's affine map (bilinear). depth [P]: triangles are drawn far to near (larger mean depth first) so the
    nearer one wins where they overlap. Returns (warped [H, W, ...], covered [H, W] bool)."""
    import cv2

    H, W = out_shape[:2]
    ids = np.full((H, W), -1, np.int32)
    order = np.arange(len(tris))
    if depth is not None:
        order = np.argsort(-depth[tris].mean(1), kind="stable")
    A = np.zeros((len(tris), 2, 3))
    for k in order:
        s, d = src_pts[tris[k]].astype(np.float32), dst_pts[tris[k]].astype(np.float32)
        if abs(np.cross(d[1] - d[0], d[2] - d[0])) < 1e-6 or abs(np.cross(s[1] - s[0], s[2] - s[0])) < 1e-6:
            continue
        A[k] = cv2.getAffineTransform(d, s)
        cv2.fillConvexPoly(ids, np.round(d * 16).astype(np.int32), int(k), lineType=cv2.LINE_8, shift=4)
    covered = ids >= 0
    ys, xs = np.nonzero(covered)
    mx = np.full((H, W), -1e4, np.float32)
    my = np.full((H, W), -1e4, np.float32)
    a = A[ids[ys, xs]]
    mx[ys, xs] = a[:, 0, 0] * xs + a[:, 0, 1] * ys + a[:, 0, 2]
    my[ys, xs] = a[:, 1, 0] * xs + a[:, 1, 1] * ys + a[:, 1, 2]
    out = cv2.remap(np.ascontiguousarray(image, np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                    borderValue=0)
    return out, covered


# ---------------------------------------------------------------------------------------------- colour

def skin_mask(lm: np.ndarray, shape) -> np.ndarray:
    """Cheeks, nose and forehead band of a face (the jaw hull without eyes, brows and mouth), bool [H, W]."""
    import cv2

    H, W = shape[:2]
    m = np.zeros((H, W), np.uint8)
    cv2.fillConvexPoly(m, cv2.convexHull(lm[list(range(17)) + list(range(17, 27))].astype(np.float32)).astype(np.int32), 1)
    for part in (range(36, 42), range(42, 48), range(48, 60), range(17, 22), range(22, 27)):
        hull = cv2.convexHull(lm[list(part)].astype(np.float32)).astype(np.int32)
        cv2.fillConvexPoly(m, hull, 0)
        cv2.polylines(m, [hull], True, 0, thickness=max(1, int(0.03 * np.linalg.norm(lm[16] - lm[0]))))
    return m > 0


@dataclass
class ColourTransfer:
    """Lab statistics transfer (Reinhard et al. 2001): x' = mu_t + (x - mu_s) * clip(sd_t / sd_s) , mixed with x by
    `strength`. Fitted once on the source face's skin and the target's skin over the clip."""
    mu_s: np.ndarray
    sd_s: np.ndarray
    mu_t: np.ndarray
    sd_t: np.ndarray
    strength: float = 0.6

    @classmethod
    def fit(cls, src_img, src_lm, tgt_frames, tgt_lms, valid, strength: float = 0.6, samples: int = 8):
        import cv2

        def lab_pixels(img, lm):
            m = skin_mask(lm, img.shape)
            lab = cv2.cvtColor(np.clip(img, 0, 1).astype(np.float32), cv2.COLOR_RGB2LAB)
            return lab[m]

        s = lab_pixels(src_img, src_lm)
        idx = np.flatnonzero(valid)
        idx = idx[np.linspace(0, len(idx) - 1, min(samples, len(idx))).round().astype(int)] if len(idx) else idx
        t = np.concatenate([lab_pixels(tgt_frames[i], tgt_lms[i]) for i in idx]) if len(idx) else s
        if len(s) < 10 or len(t) < 10:
            s = t = np.zeros((10, 3), np.float32)
        return cls(mu_s=s.mean(0), sd_s=s.std(0) + 1e-3, mu_t=t.mean(0), sd_t=t.std(0) + 1e-3, strength=float(strength))

    def apply(self, img: np.ndarray) -> np.ndarray:
        import cv2

        if self.strength <= 0:
            return img
        lab = cv2.cvtColor(np.clip(img, 0, 1).astype(np.float32), cv2.COLOR_RGB2LAB)
        ratio = np.clip(self.sd_t / self.sd_s, 0.7, 1.4)
        moved = self.mu_t + (lab - self.mu_s) * ratio
        out = cv2.cvtColor(moved.astype(np.float32), cv2.COLOR_LAB2RGB)
        return np.clip(self.strength * out + (1 - self.strength) * img, 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------------------------- frames

@dataclass
class Reenactment:
    """The source head prepared for driving: its photo (colour-matched), mask, source points (landmarks + ring),
    the ring's model coordinates, the triangulation, the lifted identity shape."""
    image: np.ndarray
    mask: np.ndarray
    src_points: np.ndarray
    ring_model: np.ndarray
    tris: np.ndarray
    shape: np.ndarray


def prepare(sources: SourceSet, colour: Optional[ColourTransfer]) -> Reenactment:
    """The primary source photo ready to be driven: colour-matched, its head mask faded along the neck (so the
    source neck melts into the target's), its points and their model coordinates, the triangulation."""
    from .head_mask import neck_fade

    head = sources.main
    ring = ring_points(head.landmarks68, sources.neck_line)
    ring_model = lift_to_plane(ring, head.pose_R, head.pose_t, head.K, float(headpose.HEAD_CENTRE_MM[2]))
    pts = np.concatenate([head.landmarks68, ring])
    img = head.image if colour is None else colour.apply(head.image)
    mask = head.mask * neck_fade(head.landmarks68, head.mask.shape, max(sources.neck_line, 0.05))
    return Reenactment(image=img, mask=mask, src_points=pts, ring_model=ring_model, tris=triangulate(pts),
                       shape=sources.shape)


OUTER_MOUTH = list(range(48, 60))


def mouth_patch(target: np.ndarray, target_lm: np.ndarray, driven_lm: np.ndarray, warped: np.ndarray,
                margin: float = 0.45):
    """The target's mouth (lips, teeth, tongue: the expression) carried onto the driven mouth: (patch [H, W, 3],
    weight [H, W]). The region is the outer lip hull grown by `margin` of its size around the mouth centre; the
    target's pixels there are warped piecewise-affinely from its landmarks to the driven ones, shifted in colour
    so the skin band around the lips matches the warped source's skin there, and blended with a weight that is 1
    inside the lips and falls to 0 across the band."""
    import cv2

    H, W = warped.shape[:2]

    def grown(lm):
        c = lm[OUTER_MOUTH].mean(0)
        return c + (1 + margin) * (lm[OUTER_MOUTH] - c)

    src = np.concatenate([target_lm[48:68], grown(target_lm)])
    dst = np.concatenate([driven_lm[48:68], grown(driven_lm)])
    patch, covered = piecewise_affine(target.astype(np.float32), src, dst, triangulate(dst), (H, W))
    lips = np.zeros((H, W), np.float32)
    cv2.fillConvexPoly(lips, cv2.convexHull(driven_lm[OUTER_MOUTH].astype(np.float32)).astype(np.int32), 1.0)
    band = covered & (lips == 0)
    if band.sum() > 10:
        patch = np.clip(patch + (warped[band].mean(0) - patch[band].mean(0)), 0, 1)
    size = np.linalg.norm(driven_lm[54] - driven_lm[48])
    dist = cv2.distanceTransform((lips == 0).astype(np.uint8), cv2.DIST_L2, 3)
    weight = np.clip(1.0 - dist / max(margin * 0.5 * size, 1.0), 0, 1) * covered
    return patch, weight.astype(np.float32)


def reenact_frame(re: Reenactment, driven_shape: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray,
                  background: np.ndarray, target: Optional[np.ndarray] = None, target_lm: Optional[np.ndarray] = None,
                  mouth: str = "target", mouth_open: float = 0.06):
    """One frame: (I_gen [H, W, 3], A_gen [H, W], driven landmarks [68, 2]). mouth: "target" (the target's mouth
    carried onto the driven lips, `mouth_patch`), or "source" (the source's lips warped, with the target's mouth
    interior where the target's mouth is open)."""
    import cv2

    H, W = background.shape[:2]
    lm_d, z_lm = project(driven_shape, R, t, K)
    ring_d, z_ring = project(re.ring_model, R, t, K)
    dst = np.concatenate([lm_d, ring_d])
    depth = np.concatenate([z_lm, z_ring])
    both = np.concatenate([re.image, re.mask[..., None]], -1)
    warped, covered = piecewise_affine(both, re.src_points, dst, re.tris, (H, W), depth)
    img, alpha = warped[..., :3], np.clip(warped[..., 3], 0, 1) * covered
    if target is not None and target_lm is not None and mouth == "target":
        patch, weight = mouth_patch(target, target_lm, lm_d, img)
        img = weight[..., None] * patch + (1 - weight[..., None]) * img
    elif target is not None and target_lm is not None:
        iod = np.linalg.norm(target_lm[36:42].mean(0) - target_lm[42:48].mean(0))
        if np.linalg.norm(target_lm[62] - target_lm[66]) > mouth_open * iod:
            src_in = target_lm[INNER_MOUTH]
            dst_in = lm_d[INNER_MOUTH]
            s = np.concatenate([src_in, src_in.mean(0, keepdims=True)])
            d = np.concatenate([dst_in, dst_in.mean(0, keepdims=True)])
            fan = np.array([[i, (i + 1) % 8, 8] for i in range(8)])
            inner, cov = piecewise_affine(target.astype(np.float32), s, d, fan, (H, W))
            m = cv2.GaussianBlur(cov.astype(np.float32), (0, 0), max(0.6, 0.02 * iod))
            img = m[..., None] * inner + (1 - m[..., None]) * img
    out = alpha[..., None] * img + (1 - alpha[..., None]) * background
    return out.astype(np.float32), alpha.astype(np.float32), lm_d


def reenact_clip(sources: SourceSet, frames: np.ndarray, landmarks: np.ndarray, valid: np.ndarray,
                 backgrounds: np.ndarray, colour_strength: float = 0.6, mouth: str = "target",
                 progress: Optional[Callable[[int], None]] = None):
    """I_gen for a clip. frames / backgrounds [T, H, W, 3]; landmarks [T, 68, 2] of the target (tracked);
    valid [T] (frames with a face). Returns (I_gen [T, H, W, 3], A_gen [T, H, W], driven landmarks [T, 68, 2],
    flagged frame indices)."""
    T, H, W = frames.shape[:3]
    valid = np.asarray(valid, bool) & np.isfinite(landmarks).all(axis=(1, 2))
    poses = headpose.head_poses(np.where(valid[:, None, None], landmarks, np.nan), (H, W))
    valid = valid & poses.ok
    shapes = headpose.lift_landmarks(np.where(valid[:, None, None], landmarks, np.nan), poses)
    driven = drive_shapes(sources.shape, shapes, valid)
    colour = None
    if colour_strength > 0 and valid.any():
        colour = ColourTransfer.fit(sources.main.image, sources.main.landmarks68, frames, landmarks, valid,
                                    colour_strength)
    re = prepare(sources, colour)
    i_gen = np.empty((T, H, W, 3), np.float32)
    a_gen = np.zeros((T, H, W), np.float32)
    lm_out = np.full((T, 68, 2), np.nan, np.float32)
    flagged: List[int] = []
    for i in range(T):
        if not valid[i]:
            i_gen[i] = frames[i]
            flagged.append(i)
        else:
            i_gen[i], a_gen[i], lm_out[i] = reenact_frame(re, driven[i], poses.R[i], poses.t[i], poses.K,
                                                          backgrounds[i], frames[i], landmarks[i], mouth)
        if progress is not None:
            progress(i)
    return i_gen, a_gen, lm_out, flagged
