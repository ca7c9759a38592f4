"""Face photos -> aligned crops and EG3D camera labels (optional: MediaPipe 0.10.x, OpenCV).

1. Landmarks: MediaPipe's face mesh (478 points with the iris refinement), from the .tflite
   models inside the mediapipe 0.10.x wheel (nothing is downloaded; the 1.x wheels lack them).
2. Crop + align as the FFHQ preprocessing does (which EG3D's FFHQ data starts from): from the
   eye centres and mouth corners, an oriented square `quad` of side
   max(2 * |eye_to_eye| * 2.0, 2 * |eye_to_mouth| * 1.8), centred 0.1 * eye_to_mouth below the
   eye midpoint, resampled to `size` x `size`. Where ours differs: the points come from the
   MediaPipe mesh instead of dlib's 68 landmarks; pixels outside the photo are reflected
   (FFHQ also blurs them); EG3D re-crops FFHQ with its 3DMM fit (Deep3DFaceRecon), we do not.
3. Pose: `cv2.solvePnP` of 10 landmarks (eye corners, nose tip and bridge, mouth corners, chin)
   against a canonical face (`CANONICAL_FACE`, a symmetric average head in mm), with the EG3D
   FFHQ intrinsics in the crop. The camera direction in the head's frame gives yaw and pitch;
   the label is the EG3D look-at camera at that yaw / pitch (the model's radius, pivot and fov),
   so roll is dropped (the alignment already levelled the eyes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from . import camera as cam

FACES_REQUIREMENTS = "pip install --no-deps -r requirements-faces.txt"

# MediaPipe face-mesh indices ("left"/"right" = the subject's). Eye centres use the iris points.
MESH = dict(right_eye_outer=33, right_eye_inner=133, left_eye_inner=362, left_eye_outer=263,
            nose_tip=1, nose_bridge=168, mouth_right=61, mouth_left=291, chin=152, forehead=10,
            right_iris=468, left_iris=473)
# A canonical head in mm, head frame: +x = subject's left, +y = up, +z = out of the face
# (the EG3D world axes: the frontal camera sits on +z). Symmetric in x.
CANONICAL_FACE: Dict[str, tuple] = {
    "right_eye_outer": (-45.0, 35.0, -25.0), "left_eye_outer": (45.0, 35.0, -25.0),
    "right_eye_inner": (-15.0, 33.0, -18.0), "left_eye_inner": (15.0, 33.0, -18.0),
    "nose_tip": (0.0, -5.0, 20.0), "nose_bridge": (0.0, 38.0, -5.0),
    "mouth_right": (-25.0, -30.0, -12.0), "mouth_left": (25.0, -30.0, -12.0),
    "chin": (0.0, -70.0, -15.0), "forehead": (0.0, 80.0, -8.0),
}


@dataclass
class FaceAlignConfig:
    """FFHQ alignment constants and the output size."""
    size: int = 512
    eye_scale: float = 2.0          # quad half-side >= |eye_to_eye| * this
    mouth_scale: float = 1.8        # quad half-side >= |eye_to_mouth| * this
    centre_shift: float = 0.1       # centre = eye midpoint + this * eye_to_mouth
    min_detection_confidence: float = 0.5


class FaceError(ValueError):
    """No face, or the face tools are missing; the message says which and what to do."""


@dataclass
class Face:
    """One aligned face: crop [size, size, 3] uint8, label [25] (EG3D camera), yaw / pitch in
    degrees from frontal (viewer convention: + yaw = camera towards the subject's left, + pitch
    = camera lower), landmarks in the crop [478, 2] (pixels), eye-line angle in the crop (deg)."""
    crop: np.ndarray
    label: np.ndarray
    yaw: float
    pitch: float
    landmarks: np.ndarray
    eye_angle: float
    quad: np.ndarray


def _mediapipe():
    try:
        import cv2  # noqa: F401  (comes with mediapipe)
        from mediapipe.python.solutions import face_mesh
    except ImportError as exc:
        raise FaceError(f"face photos need MediaPipe 0.10.x and OpenCV ({exc.name or exc} is missing): "
                        f"{FACES_REQUIREMENTS}") from None
    return face_mesh


def detect_landmarks(image: np.ndarray, cfg: Optional[FaceAlignConfig] = None) -> np.ndarray:
    """Landmarks [478, 2] in pixels (x, y) of the largest face of an RGB uint8 image [H, W, 3]."""
    cfg = cfg or FaceAlignConfig()
    face_mesh = _mediapipe()
    image = _rgb_uint8(image)
    with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=4, refine_landmarks=True,
                            min_detection_confidence=cfg.min_detection_confidence) as fm:
        result = fm.process(image)
    if not result.multi_face_landmarks:
        raise FaceError("no face found in the image")
    h, w = image.shape[:2]
    faces = [np.array([(p.x * w, p.y * h) for p in f.landmark], dtype=np.float64)
             for f in result.multi_face_landmarks]
    return max(faces, key=lambda pts: np.ptp(pts[:, 0]) * np.ptp(pts[:, 1]))


def _rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise FaceError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image * (255 if image.max() <= 1 else 1), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image[..., :3])


def alignment_quad(landmarks: np.ndarray, cfg: Optional[FaceAlignConfig] = None) -> np.ndarray:
    """The FFHQ crop square [4, 2] (top-left, bottom-left, bottom-right, top-right) in pixels."""
    cfg = cfg or FaceAlignConfig()
    eye_right, eye_left = landmarks[MESH["right_iris"]], landmarks[MESH["left_iris"]]
    mouth_avg = (landmarks[MESH["mouth_right"]] + landmarks[MESH["mouth_left"]]) / 2
    eye_avg = (eye_right + eye_left) / 2
    eye_to_eye = eye_left - eye_right          # image left to right on a frontal photo
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * cfg.eye_scale, np.hypot(*eye_to_mouth) * cfg.mouth_scale)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * cfg.centre_shift
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def crop_quad(image: np.ndarray, quad: np.ndarray, size: int):
    """Resample the quad to size x size (reflected borders); returns (crop, 2x3 affine photo->crop)."""
    import cv2
    image = _rgb_uint8(image)
    src = quad[[0, 1, 3]].astype(np.float32)             # top-left, bottom-left, top-right
    dst = np.array([[0, 0], [0, size], [size, 0]], dtype=np.float32)
    scale = np.hypot(*(quad[3] - quad[0])) / size
    shrink = int(math.floor(scale)) if scale > 2 else 1   # shrink first, as FFHQ does (no aliasing)
    if shrink > 1:
        image = cv2.resize(image, (image.shape[1] // shrink, image.shape[0] // shrink),
                           interpolation=cv2.INTER_AREA)
    M = cv2.getAffineTransform(src / shrink, dst)
    crop = cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    M = M.astype(np.float64)
    M[:, :2] /= shrink                                    # back to the original photo's pixels
    return crop, M


def head_pose(landmarks: np.ndarray, size: int, fov_degrees: float = cam.DEFAULT_FOV_DEG):
    """(yaw, pitch) in radians from frontal, of the camera seen from the head (viewer signs),
    by PnP of the crop's landmarks [N, 2] (pixels of a size x size crop) against CANONICAL_FACE."""
    import cv2
    names = list(CANONICAL_FACE)
    obj = np.array([CANONICAL_FACE[n] for n in names], dtype=np.float64)
    # OpenCV camera: y down, z forward; the head frame has y up, z towards the camera.
    obj_cv = obj * np.array([1.0, -1.0, -1.0])
    img = np.array([landmarks[MESH[n]] for n in names], dtype=np.float64)
    focal = float(cam.fov_to_intrinsics(fov_degrees)[0, 0]) * size
    K = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]], dtype=np.float64)
    # Start from a frontal head at the distance that gives the eye span seen.
    span = np.hypot(*(img[names.index("left_eye_outer")] - img[names.index("right_eye_outer")]))
    dist = focal * 90.0 / max(span, 1e-6)
    rvec0 = np.zeros((3, 1))
    tvec0 = np.array([[0.0], [0.0], [dist]])
    ok, rvec, tvec = cv2.solvePnP(obj_cv, img, K, None, rvec0, tvec0, useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise FaceError("head pose estimation (PnP) failed")
    R, _ = cv2.Rodrigues(rvec)
    centre_cv = (-R.T @ tvec).ravel()                     # camera centre in the (flipped) head frame
    d = centre_cv * np.array([1.0, -1.0, -1.0])           # back to the head frame: y up, z out
    d /= np.linalg.norm(d)
    # model.camera: origin = (sin(phi) cos(pi - yaw), cos(phi), sin(phi) sin(pi - yaw)).
    phi = math.acos(max(-1.0, min(1.0, d[1])))
    yaw_official = math.pi - math.atan2(d[2], d[0])
    yaw = (yaw_official - cam.FRONTAL + math.pi) % (2 * math.pi) - math.pi
    pitch_official = (1 - math.cos(phi)) * math.pi / 2
    return yaw, pitch_official - cam.FRONTAL


def face_label(yaw: float, pitch: float, radius: float = cam.DEFAULT_RADIUS, pivot=cam.DEFAULT_PIVOT,
               fov_degrees: float = cam.DEFAULT_FOV_DEG) -> np.ndarray:
    """The 25-d EG3D label of the look-at camera at yaw / pitch radians from frontal."""
    label = cam.orbit_label(cam.FRONTAL + yaw, cam.FRONTAL + pitch, radius, list(pivot), fov_degrees=fov_degrees)
    return label[0].numpy().astype(np.float64)


def align(image: np.ndarray, cfg: Optional[FaceAlignConfig] = None, radius: float = cam.DEFAULT_RADIUS,
          pivot=cam.DEFAULT_PIVOT, fov_degrees: float = cam.DEFAULT_FOV_DEG) -> Face:
    """Detect, crop + align and pose the face of an RGB image [H, W, 3] (uint8)."""
    cfg = cfg or FaceAlignConfig()
    pts = detect_landmarks(image, cfg)
    quad = alignment_quad(pts, cfg)
    crop, M = crop_quad(image, quad, cfg.size)
    crop_pts = np.c_[pts, np.ones(len(pts))] @ M.T
    eyes = crop_pts[MESH["left_iris"]] - crop_pts[MESH["right_iris"]]
    eye_angle = math.degrees(math.atan2(eyes[1], eyes[0]))
    yaw, pitch = head_pose(crop_pts, cfg.size, fov_degrees)
    return Face(crop=crop, label=face_label(yaw, pitch, radius, pivot, fov_degrees), yaw=math.degrees(yaw),
                pitch=math.degrees(pitch), landmarks=crop_pts, eye_angle=eye_angle, quad=quad)
