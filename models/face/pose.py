"""Head yaw (left-right turn) from 68 landmarks.

In the face's own frame (u: the unit vector from the subject's right outer eye corner, point 36, to the left
one, point 45, so roll drops out), with c the midpoint of the two outer eye corners, w = |p45 - p36| and n the
nose tip (point 30):

    r = ((n - c) . u) / w,      yaw = atan(K * r)  (degrees; positive: the nose points to larger x).

Derivation (orthographic camera, rigid head turned by yaw about its vertical axis): the eye corners, W apart
and at one depth, project w = W cos(yaw) apart; the nose tip, D in front of them on the midline, moves
sideways by D sin(yaw). So r = (D / W) tan(yaw) and K = W / D. K = 2.3: the outer eye corners are about
1.4 inter-pupil distances apart (about 9 cm) and the nose tip about 0.6 of that distance (about 4 cm) in
front of them; SwapForge's procedural head (models/gswap/body.py) has the same ratio (2.33). Pitch moves the
nose along v, not u, and leaves r unchanged to first order.

On the bundled frontal portraits the estimate is within 3 degrees of zero for the straight-on ones (obama,
astronaut, grace_hopper) and 14-21 degrees for the slightly turned ones (biden, obama2, obama3); Vermeer's
three-quarter "Girl with a Pearl Earring" gives -28.5. dlib's predictor itself breaks down on profiles, so
beyond about 60 degrees the value only says "far turned".
"""
from __future__ import annotations

import numpy as np

K_WIDTH_OVER_DEPTH = 2.3


def yaw_degrees(landmarks68: np.ndarray) -> float:
    """Yaw in degrees of one face from its 68 landmarks [68, 2] (module docstring)."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    d = lm[45] - lm[36]
    w = float(np.hypot(*d))
    if not np.isfinite(w) or w < 1e-6:
        return 90.0  # the eye corners coincide: seen side-on
    u = d / w
    r = float((lm[30] - 0.5 * (lm[36] + lm[45])) @ u) / w
    return float(np.degrees(np.arctan(K_WIDTH_OVER_DEPTH * r)))
