"""What the review page draws of keypoint evidence: a query and a candidate photo side by side with a line between
each RANSAC inlier pair, from the matching step the catalogue's evidence uses (``catalogue.deciding.local``)."""

from __future__ import annotations

import numpy as np


def match_picture(evidence, query_file: str, query_view, photo_file: str, photo_view) -> tuple[bytes, int]:
    """(PNG of the two photos side by side at the keypoints' resolution with a line between each RANSAC inlier
    pair, the inlier count). The query is drawn mirrored when it was matched mirrored (opposite lateral sides)."""
    import cv2

    step = evidence.step
    target = step.features(photo_file)
    best = None
    for flip in step.pair_flips(query_view, photo_view):
        src, dst = step.matches(step.features(query_file, flip), target)
        keep = step.inlier_mask(src, dst)
        if best is None or keep.sum() > best[3].sum():
            best = (flip, src, dst, keep)
    flip, src, dst, keep = best

    def load(path, mirrored):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"cannot read {path}")
        scale = step.max_side / max(img.shape[:2])
        img = cv2.resize(img, (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        return np.ascontiguousarray(img[:, ::-1]) if mirrored else img

    a, b = load(query_file, flip), load(photo_file, False)
    gap = 8
    canvas = np.full((max(a.shape[0], b.shape[0]), a.shape[1] + gap + b.shape[1], 3), 255, np.uint8)
    canvas[:a.shape[0], :a.shape[1]] = a
    canvas[:b.shape[0], a.shape[1] + gap:] = b
    for (x0, y0), (x1, y1) in zip(src[keep], dst[keep]):
        p0, p1 = (int(round(x0)), int(round(y0))), (int(round(x1)) + a.shape[1] + gap, int(round(y1)))
        cv2.line(canvas, p0, p1, (60, 200, 60), 1, cv2.LINE_AA)
        cv2.circle(canvas, p0, 3, (40, 160, 255), 1, cv2.LINE_AA)
        cv2.circle(canvas, p1, 3, (40, 160, 255), 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", canvas)
    if not ok:
        raise ValueError("cannot encode the picture")
    return png.tobytes(), int(keep.sum())
