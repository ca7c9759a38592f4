"""Exports shared by the viewer and `visualizer.py <subcommand>`: turntable and latent-walk
videos, image grids (PNG with metadata) and, in `app.mesh`, meshes.

Design
- Frames are produced one at a time by generators and streamed to the writer, so memory does not
  grow with the video length.
- Every output is written under a hidden temporary name in the destination folder and renamed
  over the final name only when complete: an exception, a Ctrl-C or a cancellation leaves neither
  a final file nor temporary litter.
- Videos are H.264 / yuv420p through the ffmpeg binary bundled with imageio-ffmpeg (even frame
  sizes are guaranteed by edge padding); `png_sequence=True` writes lossless numbered PNGs into a
  folder instead.
- Long exports take `progress(done, total)` and `cancel` (a `threading.Event`) so the viewer can
  run them in a background thread; the command line additionally shows a tqdm bar with ETA.
  Raising from `progress` (e.g. KeyboardInterrupt) aborts the export cleanly, like `cancel`.
- Views are rendered through the viewer state (`app.state`: `render_state`, `to_display_rgb`), so
  an export shows exactly what the viewer shows for the same state (`--state FILE`).
- Planes are computed once per seed for turntables; latent walks recompute them per frame (w
  changes), as does the conditioning mode 'camera' (the generator's input pose changes).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from model.output import SIGNATURE, AtomicOutput, check_replace, has_signature
from model.device import module_device

from . import state as S

ProgressFn = Callable[[int, int], None]
PathLike = Union[str, os.PathLike]

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")
CAMERA_PATHS = ("360", "sweep", "orbit", "static")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
CRF_RANGE = (0.0, 51.0)                 # x264's constant rate factor
FPS_RANGE = (0.0, 240.0)                # (lo, hi]
BITRATE_RANGE = (1e3, 1e9)              # bits per second
MAX_FRAMES = 100_000                    # per video: about 55 min at 30 fps
MAX_GRID_CELLS = 256
MAX_VIDEO_SIDE = 8192                   # H.264 level 6.2 covers 8192x4320
MAX_IMAGE_SIDE = 16384


class ExportError(ValueError):
    """A user-facing problem with the export's arguments (bad seeds, grid, path...)."""


class ExportCancelled(Exception):
    """Raised when the `cancel` event was set; the partial output has been removed."""


# --------------------------------------------------------------------------------------------
# Argument parsing helpers


def parse_seeds(text: Union[str, int, Sequence[int]]) -> List[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]. Ranges are inclusive; '5-2' counts down. Seeds are the
    numpy RandomState seeds the official scripts use, so they must be in [0, 2**32)."""
    if isinstance(text, int):
        items: List[int] = [text]
    elif not isinstance(text, str):
        items = [int(s) for s in text]
    else:
        items = []
        for part in text.replace(" ", "").split(","):
            if not part:
                raise ExportError(f"empty item in seed list {text!r}")
            match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if match is None:
                raise ExportError(f"cannot parse seed {part!r} in {text!r}; use e.g. '0-3,7'")
            lo = int(match.group(1))
            hi = int(match.group(2)) if match.group(2) is not None else lo
            step = 1 if hi >= lo else -1
            if abs(hi - lo) >= 1_000_000:
                raise ExportError(f"seed range {part!r} is too long")
            items.extend(range(lo, hi + step, step))
    for seed in items:
        if not 0 <= seed < 2 ** 32:
            raise ExportError(f"seed {seed} is outside [0, 2**32)")
    if not items:
        raise ExportError("no seeds given")
    return items


def parse_grid(text: Union[str, Tuple[int, int], None], max_cells: int = MAX_GRID_CELLS) -> Tuple[int, int]:
    """'4x2' (or '4,2') -> (columns, rows) = (4, 2); None -> (1, 1). At most max_cells cells."""
    if text is None:
        return (1, 1)
    if isinstance(text, tuple):
        cols, rows = text
    else:
        match = re.fullmatch(r"\s*(\d+)\s*[x,X]\s*(\d+)\s*", text)
        if match is None:
            raise ExportError(f"cannot parse grid {text!r}; use COLSxROWS, e.g. 2x2")
        cols, rows = int(match.group(1)), int(match.group(2))
    if cols < 1 or rows < 1:
        raise ExportError(f"grid must be at least 1x1, got {cols}x{rows}")
    if cols * rows > max_cells:
        raise ExportError(f"grid {cols}x{rows} has {cols * rows} cells; at most {max_cells} are supported")
    return cols, rows


def parse_bitrate(text: str) -> str:
    """'10M', '800k', '2500000' -> the same text for ffmpeg, after checking it is a sane rate."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*", str(text))
    if match is None:
        raise ExportError(f"bitrate {text!r} is not a rate; use e.g. 10M or 800k")
    value = float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2).lower()]
    if not BITRATE_RANGE[0] <= value <= BITRATE_RANGE[1]:
        raise ExportError(f"bitrate {text!r} is outside 1k..1G bits per second")
    return match.group(1) + match.group(2)


def check_grid_fill(count: int, grid: Tuple[int, int]) -> None:
    """Refuse a grid whose last row(s) would stay black: e.g. 2 seeds in a 3x3 grid."""
    cols, rows = grid
    if count <= cols * rows and count <= cols * (rows - 1):
        raise ExportError(f"grid {cols}x{rows} has {cols * rows} cells but only {count} seed(s) are given, "
                          f"so whole rows would stay black; give more seeds or a smaller grid")


def check_frame_side(width: int, height: int, limit: int, what: str) -> None:
    """Refuse an output frame larger than `limit` pixels per side before anything is rendered."""
    if max(width, height) > limit:
        raise ExportError(f"{what} would be {width}x{height} pixels; at most {limit} per side "
                          "(use a smaller --size or --grid)")


# --------------------------------------------------------------------------------------------
# The overwrite rule (model.output): we replace only files that carry our signature


def is_own_file(path: Path) -> bool:
    """Whether `path` is a file one of our exports wrote (PNG text, video metadata, PLY/OBJ
    comment and MRC label all carry `model.output.SIGNATURE`)."""
    return path.is_file() and has_signature(path, SIGNATURE)


def check_output(path: PathLike, overwrite: bool = False, protect: Sequence[Optional[PathLike]] = ()) -> None:
    """Refuse (OutputRefused) an output path that holds a file we did not write, unless overwrite;
    never one of the inputs (`protect`: the checkpoint, the state file)."""
    check_replace(path, overwrite, is_own_file, protect=[p for p in protect if p is not None], what="output")


# --------------------------------------------------------------------------------------------
# Frame writers


def even_frame(frame: np.ndarray) -> np.ndarray:
    """Pad an HxWx3 uint8 frame to even height and width by repeating its last row/column
    (yuv420p needs even sizes; padding keeps every pixel instead of rescaling)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames must be HxWx3 uint8, got {frame.dtype} {frame.shape}")
    return frame


class _FrameWriter:
    """Context-manager protocol of the frame writers: commit on success, abort on any error."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


class VideoWriter(_FrameWriter):
    """Stream RGB frames into an H.264 (libx264, yuv420p) file with the ffmpeg binary that
    imageio-ffmpeg bundles. Use as a context manager: a clean exit finalises and renames the
    temporary file over `path`; an exception kills ffmpeg and removes the temporary file.

    crf: x264 constant rate factor (0 lossless-ish in yuv420p, 18 visually transparent, 23
    x264's default); bitrate (e.g. '10M', as the official scripts use) overrides crf.
    """

    def __init__(self, path: PathLike, fps: float = 30, crf: float = 18, bitrate: Optional[str] = None,
                 preset: str = "medium", codec: str = "libx264", pix_fmt: str = "yuv420p",
                 extra_output_params: Sequence[str] = ()):
        import imageio_ffmpeg
        self.path = Path(path)
        if not self.path.parent.exists():
            raise ExportError(f"output folder {self.path.parent} does not exist")
        self.fps = float(fps)
        if not self.fps > 0:
            raise ExportError(f"fps must be positive, got {fps}")
        self.crf, self.bitrate, self.preset, self.codec, self.pix_fmt = crf, bitrate, preset, codec, pix_fmt
        self.extra_output_params = list(extra_output_params)
        self.exe = imageio_ffmpeg.get_ffmpeg_exe()
        self._out = AtomicOutput(self.path)
        self.tmp = self._out.tmp
        self.size: Optional[Tuple[int, int]] = None   # (width, height) after even padding
        self.frames = 0
        self._proc: Optional[subprocess.Popen] = None
        self._log = None
        self._done = False

    def _start(self, width: int, height: int) -> None:
        container = {".mov": "mov", ".mkv": "matroska"}.get(self.path.suffix.lower(), "mp4")
        cmd = [self.exe, "-y", "-hide_banner", "-loglevel", "error",
               "-f", "rawvideo", "-vcodec", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", f"{self.fps:.6g}", "-i", "-", "-an",
               "-vcodec", self.codec, "-pix_fmt", self.pix_fmt, "-preset", self.preset]
        cmd += ["-b:v", str(self.bitrate)] if self.bitrate else ["-crf", f"{self.crf:g}"]
        cmd += ["-metadata", f"comment={SIGNATURE.decode()} (visualizer.py)"]     # lets us recognise our files
        if container in ("mp4", "mov"):
            cmd += ["-movflags", "+faststart"]
        cmd += self.extra_output_params + ["-f", container, str(self.tmp)]
        self._log = tempfile.TemporaryFile()
        # A new session: a terminal Ctrl-C reaches only Python, which then kills ffmpeg itself
        # (otherwise ffmpeg would finalise the partial file on SIGINT).
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=self._log, start_new_session=True)
        self.size = (width, height)

    def _ffmpeg_log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace").strip()

    def write(self, frame: np.ndarray) -> None:
        if self._done:
            raise RuntimeError("writer is closed")
        frame = even_frame(_check_frame(frame))
        h, w = frame.shape[:2]
        if self._proc is None:
            self._start(w, h)
        elif (w, h) != self.size:
            raise ValueError(f"frame size {w}x{h} differs from the first frame's {self.size}")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except (BrokenPipeError, OSError) as err:
            self._proc.wait()
            raise RuntimeError(f"ffmpeg stopped: {self._ffmpeg_log() or err}") from None
        self.frames += 1

    def close(self) -> Path:
        """Finish encoding and move the file into place."""
        if self._done:
            return self.path
        if self._proc is None:
            self._done = True
            self._out.abort()
            raise RuntimeError("no frames were written")
        with contextlib.suppress(BrokenPipeError, OSError):
            self._proc.stdin.close()
        code = self._proc.wait()
        self._done = True
        if code != 0:
            log = self._ffmpeg_log()
            self._cleanup()
            raise RuntimeError(f"ffmpeg failed with exit code {code}: {log}")
        self._close_log()
        return self._out.commit()

    def abort(self) -> None:
        """Kill ffmpeg and delete the partial file (safe to call more than once)."""
        self._done = True
        self._cleanup()

    def _cleanup(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._proc is not None and self._proc.stdin and not self._proc.stdin.closed:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        self._out.abort()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class PngSequenceWriter(_FrameWriter):
    """Lossless alternative to `VideoWriter`: frame_00000.png, ... in the folder `path`,
    assembled in a hidden temporary folder and renamed into place when complete. An existing
    folder at `path` is replaced only if it is empty or holds nothing but frame_*.png files
    (or overwrite=True)."""

    pattern = "frame_{:05d}.png"

    def __init__(self, path: PathLike, fps: float = 30, metadata: Optional[dict] = None,
                 overwrite: bool = False, **_ignored):
        self.path = Path(path)
        check_replace(self.path, overwrite, is_frame_folder, what="output")
        self.fps = fps
        self.metadata = dict(metadata or {})
        self._out = AtomicOutput(self.path, directory=True)
        self.tmp = Path(self._out.tmp)
        self.size: Optional[Tuple[int, int]] = None
        self.frames = 0
        self._done = False

    def write(self, frame: np.ndarray) -> None:
        frame = _check_frame(frame)
        h, w = frame.shape[:2]
        if self.size is None:
            self.size = (w, h)
        elif (w, h) != self.size:
            raise ValueError(f"frame size {w}x{h} differs from the first frame's {self.size}")
        meta = dict(self.metadata, frame=self.frames, fps=self.fps)
        save_png(frame, self.tmp / self.pattern.format(self.frames), meta, atomic=False)
        self.frames += 1

    def close(self) -> Path:
        self._done = True
        return self._out.commit()

    def abort(self) -> None:
        self._done = True
        self._out.abort()


def is_frame_folder(path: Path) -> bool:
    """A folder `PngSequenceWriter` wrote: nothing but frame_NNNNN.png files."""
    return path.is_dir() and all(re.fullmatch(r"frame_\d+\.png", p.name) and p.is_file() for p in path.iterdir())


def open_frame_writer(path: PathLike, fps: float, png_sequence: Optional[bool] = None,
                      metadata: Optional[dict] = None, overwrite: bool = False, **video_kwargs):
    """A VideoWriter for .mp4/.mov/.mkv, a PngSequenceWriter for a folder (png_sequence=True,
    or a path without any suffix); other suffixes are an error. An existing output is replaced
    only if we wrote it (or overwrite=True)."""
    path = Path(path)
    if png_sequence is None:
        png_sequence = path.suffix == ""
    if png_sequence:
        return PngSequenceWriter(path, fps=fps, metadata=metadata, overwrite=overwrite)
    check_video_path(path)
    check_output(path, overwrite)
    return VideoWriter(path, fps=fps, **video_kwargs)


def check_video_path(path: Path) -> None:
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ExportError(f"video output must end in {'/'.join(VIDEO_SUFFIXES)}, got {path.name!r}")


# --------------------------------------------------------------------------------------------
# PNG with metadata


def save_png(image: np.ndarray, path: PathLike, metadata: Optional[dict] = None, atomic: bool = True,
             extra_text: Optional[Dict[str, str]] = None) -> Path:
    """Write an HxWx3 uint8 image; `metadata` goes into a tEXt chunk 'eg3d' as JSON (plus a
    readable 'Description' and 'Software'); extra_text adds raw tEXt chunks."""
    from PIL import Image, PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", f"{SIGNATURE.decode()} (visualizer.py)")
    for key, value in (extra_text or {}).items():
        info.add_text(key, value)
    if metadata:
        info.add_text("eg3d", json.dumps(metadata, sort_keys=True, default=_json_default))
        short = ", ".join(f"{k}={metadata[k]}" for k in ("seed", "seeds", "psi", "render") if k in metadata)
        if short:
            info.add_text("Description", short)
    img = Image.fromarray(_check_frame(image), "RGB")
    path = Path(path)
    if not atomic:
        img.save(path, format="PNG", pnginfo=info, compress_level=4)
        return path
    with AtomicOutput(path) as out:
        img.save(out.tmp, format="PNG", pnginfo=info, compress_level=4)
    return path


def read_png_metadata(path: PathLike) -> dict:
    """The JSON metadata `save_png` stored (empty dict if none)."""
    from PIL import Image
    with Image.open(path) as img:
        text = img.text.get("eg3d") if hasattr(img, "text") else None
    return json.loads(text) if text else {}


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return np.asarray(obj.detach().cpu() if isinstance(obj, torch.Tensor) else obj).tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


_DIGESTS: Dict[Tuple[str, float, int], str] = {}


def file_digest(path: Optional[PathLike]) -> Optional[str]:
    """SHA-256 of a checkpoint file (cached by path, mtime and size)."""
    if path is None or not Path(path).is_file():
        return None
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_mtime, st.st_size)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


# --------------------------------------------------------------------------------------------
# Progress and cancellation


class Progress:
    """tqdm bar (optional) + `progress(done, total)` callback + cancellation checks."""

    def __init__(self, total: int, desc: str, progress: Optional[ProgressFn] = None,
                 cancel: Optional[threading.Event] = None, bar: bool = True, unit: str = "frame"):
        self.total, self.done = int(total), 0
        self.callback, self.cancel = progress, cancel
        self.bar = None
        if bar:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=self.total, desc=desc, unit=unit, dynamic_ncols=True, leave=True)

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise ExportCancelled("export cancelled")

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.callback is not None:
            self.callback(self.done, self.total)
        self.check()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        self.check()
        if self.callback is not None:
            self.callback(0, self.total)
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# --------------------------------------------------------------------------------------------
# Camera paths


def camera_path(kind: str, frames: int, yaw_range: Optional[float] = None,
                pitch_range: Optional[float] = None, loop: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Per-frame (yaw, pitch) offsets in degrees (viewer-state convention: from the base view,
    positive pitch = camera lower) for `frames` frames.

    360    a full turn, yaw 0..360 (one step short of 360 when looping); pitch_range = wobble
           amplitude (one up-down cycle per turn; default 0)
    sweep  yaw swings between -yaw_range and +yaw_range (sinusoid, default 30); pitch_range =
           wobble amplitude (two cycles per sweep, a figure of eight; default 0)
    orbit  the official gen_videos ellipse: yaw = yaw_range sin(2 pi t), pitch = pitch_range
           cos(2 pi t) - 2.86 (defaults 20.05 and 14.32 deg = 0.35 and 0.25 rad; the official
           -0.05 rad pitch bias is kept)
    static no motion
    loop=True: the last frame flows into the first (t = i / frames); else t = i / (frames - 1).
    """
    if frames < 1:
        raise ExportError(f"need at least one frame, got {frames}")
    _check_frames(frames)
    denom = frames if (loop or frames == 1) else frames - 1
    t = np.arange(frames, dtype=np.float64) / denom
    if kind == "360":
        wobble = 0.0 if pitch_range is None else pitch_range
        return 360.0 * t, wobble * np.sin(2 * np.pi * t)
    if kind == "sweep":
        yr = 30.0 if yaw_range is None else yaw_range
        wobble = 0.0 if pitch_range is None else pitch_range
        return yr * np.sin(2 * np.pi * t), wobble * np.sin(4 * np.pi * t)
    if kind == "orbit":
        yr = math.degrees(0.35) if yaw_range is None else yaw_range
        pr = math.degrees(0.25) if pitch_range is None else pitch_range
        return yr * np.sin(2 * np.pi * t), pr * np.cos(2 * np.pi * t) - math.degrees(0.05)
    if kind == "static":
        return np.zeros(frames), np.zeros(frames)
    raise ExportError(f"unknown camera path {kind!r}; choose one of {', '.join(CAMERA_PATHS)}")


# --------------------------------------------------------------------------------------------
# Rendering through the viewer state (app.state), so exports show exactly what the viewer shows


def seed_state(base: S.ViewerState, seed: Optional[int]) -> S.ViewerState:
    """The base state showing `seed` (plain seed: no fractional seed, no A->B interpolation;
    style mixing is kept). seed=None keeps the base state's latent unchanged."""
    if seed is None:
        return base.copy()
    return base.copy(seed=int(seed), seed_frac=0.0, interp_enabled=False)


def posed_state(st: S.ViewerState, dyaw: float, dpitch: float) -> S.ViewerState:
    return st.copy(yaw=float(st.yaw + dyaw), pitch=float(st.pitch + dpitch))


def inspects(st: S.ViewerState) -> Optional[str]:
    """'layer' / 'planes' when the state shows an inspection view (`--render layer:NAME`,
    `--render planes`), else None."""
    return "layer" if st.layers.name is not None else "planes" if st.planes.show else None


def native_size(G, st: S.ViewerState) -> int:
    if inspects(st) == "planes":
        return int(G.cfg.backbone.resolution)
    if inspects(st) == "layer":
        return int(G.img_resolution)         # an upper bound for the size checks
    if st.render_type == "final":
        return int(G.img_resolution)
    return int(st.neural_res or G.neural_rendering_resolution)


class StateRenderer:
    """Renders viewer states to pixels with `app.state.render_state` + `to_display_rgb`.

    - planes are cached per latent (an LRU with room for every grid cell), so a turntable
      computes each seed's planes once;
    - depth and feature colouring use one range for the whole export (the state's `depth_range`
      / `feature_range`, else `app.state.robust_range` measured on the first frame over all
      cells), so videos do not flicker;
    - size: output cell size (None = the render type's native size); depth_side appends the
      depth map (same size) to the right of each view.
    """

    def __init__(self, G, size: Optional[int] = None, depth_side: bool = False, cache_size: int = 4):
        if size is not None and size < 2:
            raise ExportError(f"size must be at least 2, got {size}")
        self.G = G
        self.size = size
        self.depth_side = depth_side
        self.cache = S.PlanesCache(capacity=max(1, cache_size))
        self.depth_range: Optional[List[float]] = None
        self.feature_range: Optional[List[float]] = None
        self.layer_range: Optional[List[float]] = None      # one channel's range, from the first frame
        self.planes_range: Optional[List[float]] = None     # the same for the planes' channel
        self.pca = S.PCACache()

    def _inspect(self, st: S.ViewerState, ws: Optional[torch.Tensor]) -> np.ndarray:
        """A layer or planes view; the channel range (one channel) and the PCA (per latent) are
        fixed by the first frame, so videos do not flicker (latent walks included: their
        frames share the base state's latent key). --size sets the height."""
        if inspects(st) == "planes":
            if st.planes.mode == "channel" and self.planes_range is None:
                side = S.planes_side_by_side(S.state_planes(self.G, st, self.cache, ws))
                self.planes_range = list(S.robust_range(side[min(st.planes.channel, side.shape[0] - 1)]))
            rgb = S.planes_view(self.G, st, self.cache, self.pca, ws=ws,
                                value_range=self.planes_range if st.planes.mode == "channel" else None)
        else:
            lay = st.layers
            cap = S.capture_layer(self.G, st, ws, self.cache)
            value_range, pca = lay.range, None
            if lay.mode == "channel" and value_range is None:
                if self.layer_range is None:
                    ch = min(lay.channel, cap["image"].shape[0] - 1)
                    self.layer_range = list(S.robust_range(cap["image"][ch]))
                value_range = self.layer_range
            if lay.mode == "pca":
                from model.introspect import PCAProjection
                pca = self.pca.get((lay.name, lay.sample, st.latent.key()), lambda: PCAProjection.fit(cap["image"]))
            rgb = S.inspect_rgb(cap["image"], lay.mode, lay.channel, lay.grid, value_range, pca)
        if self.size is not None and rgb.shape[0] != self.size:
            from PIL import Image
            w = max(1, round(rgb.shape[1] * self.size / rgb.shape[0]))
            rgb = np.asarray(Image.fromarray(rgb).resize((w, self.size), Image.NEAREST))
        return rgb

    def _needs_depth(self, st: S.ViewerState) -> bool:
        return st.render_type == "depth" or self.depth_side

    def render(self, states: Sequence[S.ViewerState], ws: Optional[Sequence[Optional[torch.Tensor]]] = None,
               cache: bool = True) -> np.ndarray:
        """Views of the states -> [N, H, W(*2), 3] uint8. ws[i] (optional) overrides state i's
        latent; cache=False skips the planes cache (latent walks: every frame is new)."""
        ws = list(ws) if ws is not None else [None] * len(states)
        if any(inspects(st) for st in states):
            return np.stack([self._inspect(st, w) for st, w in zip(states, ws)])
        outs = [S.render_state(self.G, st, self.cache if cache else None, ws=w) for st, w in zip(states, ws)]
        if self.depth_range is None and any(self._needs_depth(st) and st.depth_range is None for st in states):
            self.depth_range = list(S.robust_range([o["image_depth"] for o in outs],
                                                   [o.get("image_alpha") for o in outs]))
        if self.feature_range is None and any(st.render_type == "feature" and st.feature_range is None
                                              for st in states):
            self.feature_range = list(S.robust_range([S.feature_channel(o, st) for o, st in zip(outs, states)]))
        cells = []
        for st, out in zip(states, outs):
            shown = st
            if st.depth_range is None and self.depth_range is not None:
                shown = shown.copy(depth_range=self.depth_range)
            if st.feature_range is None and self.feature_range is not None:
                shown = shown.copy(feature_range=self.feature_range)
            size = self.size or native_size(self.G, st)
            rgb = S.to_display_rgb(out, shown, size=None if size == native_size(self.G, st) else size)
            if self.depth_side and st.render_type != "depth":
                depth = S.to_display_rgb(out, shown.copy(render_type="depth"), size=rgb.shape[0])
                rgb = np.concatenate([rgb, depth], axis=1)
            cells.append(rgb)
        return np.stack(cells)


def free_stem(stem: str) -> str:
    """stem_000, stem_001, ...: the first whose files (any suffix) do not exist yet."""
    import glob
    i = 0
    while glob.glob(glob.escape(f"{stem}_{i:03d}") + "*"):
        i += 1
    return f"{stem}_{i:03d}"


def export_planes(G, stem: PathLike, state: Optional[S.ViewerState] = None, overwrite: bool = False,
                  protect: Sequence[Optional[PathLike]] = ()) -> List[Path]:
    """The state's tri-planes: STEM_<label>.png for each plane (as the Tri-planes view colours
    it, overlays included) and STEM.npy, the raw tensor [3, C, H, W] float32 (noise mode of the
    state). Every path is checked by the overwrite rule before anything is written."""
    from model.introspect import plane_labels
    st = (state or S.ViewerState()).copy(planes_show=True)
    st.validate()
    stem = Path(stem)
    labels = plane_labels(G.cfg.rendering.plane_axes)
    pngs = [stem.with_name(f"{stem.name}_{lab}.png") for lab in labels]
    npy = stem.with_name(stem.name + ".npy")
    for p in pngs:
        check_output(p, overwrite, protect)
    check_replace(npy, overwrite, lambda _p: False, protect=[p for p in protect if p], what="output")
    stem.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        ws = S.compute_ws(G, st)
        planes = G.planes(ws, noise_mode=st.render.noise_mode)
    rgb = S.planes_view(G, st, None, None, ws=ws)
    h, w = planes.shape[-2:]
    meta = dict(render="planes", seed=st.latent.seed, plane_axes=G.cfg.rendering.plane_axes)
    for k, p in enumerate(pngs):
        x0 = k * (w + S.display.PLANES_GAP)
        save_png(rgb[:, x0:x0 + w], p, metadata=dict(meta, plane=labels[k]), extra_text=S.png_state_text(st))
    raw = planes[0].detach().float().cpu().numpy()
    from model.output import atomic_write

    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, raw)
    atomic_write(npy, write)
    return pngs + [npy]


def layout_grid(cells: np.ndarray, grid: Tuple[int, int]) -> np.ndarray:
    """[N, H, W, 3] cells, row-major into a (cols, rows) grid; missing cells are black."""
    cols, rows = grid
    n, h, w, ch = cells.shape
    if n > cols * rows:
        raise ValueError(f"{n} cells do not fit a {cols}x{rows} grid")
    if n < cols * rows:
        cells = np.concatenate([cells, np.zeros((cols * rows - n, h, w, ch), cells.dtype)])
    return cells.reshape(rows, cols, h, w, ch).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, ch)


def provenance(network: Optional[PathLike]) -> dict:
    """Metadata about the checkpoint: path and SHA-256."""
    return {"network": None if network is None else str(network), "network_sha256": file_digest(network)}


def _resolve_seeds(seeds) -> List[Optional[int]]:
    """Explicit seeds, or [None] = the base state's own latent (exactly what the viewer shows)."""
    if seeds is None:
        return [None]
    return list(parse_seeds(seeds))


def _pages(items: Sequence, per_page: int) -> List[list]:
    return [list(items[i:i + per_page]) for i in range(0, len(items), per_page)]


def _page_path(out: Path, index: int, count: int, first_seed: Optional[int]) -> Path:
    if count == 1:
        return out
    tag = f"_{index:02d}" + ("" if first_seed is None else f"_seed{first_seed:04d}")
    return out.with_name(f"{out.stem}{tag}{out.suffix}")


def _check_video_targets(targets: Sequence[Path], video: "VideoOptions", overwrite: bool,
                         protect: Sequence[Optional[PathLike]]) -> None:
    """Every page's output may be written (suffix, overwrite rule), checked before rendering."""
    for target in targets:
        if video.is_png_sequence(target):
            check_replace(target, overwrite, is_frame_folder, protect=[p for p in protect if p], what="output")
        else:
            check_video_path(target)
            check_output(target, overwrite, protect)


def _frame_dims(G, st: S.ViewerState, grid: Tuple[int, int], size: Optional[int], depth_side: bool,
                views: int = 1) -> Tuple[int, int]:
    """(width, height) of one output frame / image, known before rendering."""
    cell = size or native_size(G, st)
    if inspects(st) == "planes":             # three planes side by side
        return grid[0] * (3 * cell + 2 * S.display.PLANES_GAP) * views, grid[1] * cell
    return grid[0] * cell * views * (2 if depth_side and st.render_type != "depth" else 1), grid[1] * cell


def _check_frames(total: int) -> None:
    if total > MAX_FRAMES:
        raise ExportError(f"{total} frames requested; at most {MAX_FRAMES} per video")


def _write_video(frames_iter: Iterator[np.ndarray], target: Path, total: int, video: "VideoOptions",
                 meta: dict, desc: str, progress, cancel, bar, overwrite: bool = False) -> Path:
    with Progress(total, desc, progress, cancel, bar) as prog:
        try:
            with video.writer(target, meta, overwrite) as writer:
                for frame in frames_iter:
                    writer.write(frame)
                    prog.update()
        finally:
            frames_iter.close()
    return target


@dataclass
class VideoOptions:
    """Encoder settings. crf 18 is visually transparent for x264; bitrate (e.g. '10M', what the
    official scripts use) overrides it. png_sequence None = decided by the output suffix."""
    fps: float = 30
    crf: float = 18
    bitrate: Optional[str] = None
    preset: str = "medium"
    png_sequence: Optional[bool] = None

    def __post_init__(self):
        if not (math.isfinite(self.fps) and FPS_RANGE[0] < self.fps <= FPS_RANGE[1]):
            raise ExportError(f"fps must be in (0, {FPS_RANGE[1]:g}], got {self.fps}")
        if not (math.isfinite(self.crf) and CRF_RANGE[0] <= self.crf <= CRF_RANGE[1]):
            raise ExportError(f"crf must be in [{CRF_RANGE[0]:g}, {CRF_RANGE[1]:g}] (x264), got {self.crf}")
        if self.bitrate is not None:
            self.bitrate = parse_bitrate(self.bitrate)
        if self.preset not in X264_PRESETS:
            raise ExportError(f"unknown x264 preset {self.preset!r}; choose one of {', '.join(X264_PRESETS)}")

    def writer(self, path: Path, metadata: dict, overwrite: bool = False):
        return open_frame_writer(path, self.fps, png_sequence=self.png_sequence, metadata=metadata,
                                 overwrite=overwrite, crf=self.crf, bitrate=self.bitrate, preset=self.preset)

    def is_png_sequence(self, path: Path) -> bool:
        return path.suffix == "" if self.png_sequence is None else self.png_sequence


# --------------------------------------------------------------------------------------------
# Turntable


def turntable_frames(G, state: Optional[S.ViewerState] = None, seeds=None, *, grid=(1, 1),
                     frames: int = 120, path: str = "360", yaw_range: Optional[float] = None,
                     pitch_range: Optional[float] = None, size: Optional[int] = None,
                     depth_side: bool = False, loop: bool = True) -> Iterator[np.ndarray]:
    """Yield the turntable's frames (HxWx3 uint8) lazily. The cells are the base state with each
    seed; each seed's ws and planes are computed once (cond_mode 'camera' changes the
    generator's input pose every frame, so there they are recomputed per frame)."""
    base = state or S.ViewerState()
    cell_seeds = _resolve_seeds(seeds)
    grid = parse_grid(grid)
    if len(cell_seeds) > grid[0] * grid[1]:
        raise ExportError(f"{len(cell_seeds)} seeds do not fit a {grid[0]}x{grid[1]} grid")
    yaws, pitches = camera_path(path, frames, yaw_range, pitch_range, loop=loop)
    cells = [seed_state(base, s) for s in cell_seeds]
    renderer = StateRenderer(G, size=size, depth_side=depth_side, cache_size=len(cells))
    follow = base.cond_mode == "camera"
    with torch.no_grad():
        ws = [None if follow else S.compute_ws(G, st) for st in cells]
    for f in range(frames):
        states = [posed_state(st, yaws[f], pitches[f]) for st in cells]
        yield layout_grid(renderer.render(states, ws, cache=not follow), grid)


def export_turntable(G, out: PathLike, state: Optional[S.ViewerState] = None, seeds=None, *,
                     grid=None, frames: int = 120, path: str = "360",
                     yaw_range: Optional[float] = None, pitch_range: Optional[float] = None,
                     size: Optional[int] = None, depth_side: bool = False,
                     video: Optional[VideoOptions] = None, network: Optional[PathLike] = None,
                     progress: Optional[ProgressFn] = None, cancel: Optional[threading.Event] = None,
                     bar: bool = True, overwrite: bool = False, protect: Optional[PathLike] = None) -> List[Path]:
    """Write turntable video(s) of `state` (default: a default ViewerState) for each seed
    (None = the state's own latent). Seeds fill the grid row by row; more seeds than cells make
    several videos (out_00_seed0000.mp4, out_01_seed0004.mp4, ...). Returns the written paths.
    The viewer can call this from a worker thread with progress/cancel (bar=False). An existing
    output is replaced only if we wrote it, or with overwrite; never `network` or `protect`."""
    base = state or S.ViewerState()
    grid = parse_grid(grid)
    cell_seeds = _resolve_seeds(seeds)
    check_grid_fill(len(cell_seeds), grid)
    video = video or VideoOptions()
    out = Path(out)
    check_frame_side(*_frame_dims(G, base, grid, size, depth_side), MAX_VIDEO_SIDE, "a turntable frame")
    _check_frames(frames)
    pages = _pages(cell_seeds, grid[0] * grid[1])
    targets = [_page_path(out, index, len(pages), page[0]) for index, page in enumerate(pages)]
    _check_video_targets(targets, video, overwrite, (network, protect))
    written: List[Path] = []
    for page, target in zip(pages, targets):
        meta = dict(provenance(network), kind="turntable", seeds=page, grid=list(grid), frames=frames,
                    path=path, yaw_range=yaw_range, pitch_range=pitch_range, fps=video.fps,
                    state=base.to_dict())
        gen = turntable_frames(G, base, None if page == [None] else page, grid=grid, frames=frames,
                               path=path, yaw_range=yaw_range, pitch_range=pitch_range, size=size,
                               depth_side=depth_side)
        written.append(_write_video(gen, target, frames, video, meta, f"turntable {target.name}",
                                    progress, cancel, bar, overwrite=True))     # checked above
    return written


# --------------------------------------------------------------------------------------------
# Latent walk (interpolation video)


class KeyframeInterpolator:
    """Interpolates keyframes [K, ...] at times in keyframe units (t = k gives key k exactly).

    kind 'cubic': a C2 cubic spline through the keys (periodic when looping, like the official
    latent walks' wrapped cubic); 'linear': piecewise linear. loop=True treats the keys as a
    cycle (after key K-1 comes key 0 again)."""

    def __init__(self, keys: np.ndarray, kind: str = "cubic", loop: bool = True):
        if kind not in ("cubic", "linear"):
            raise ExportError(f"unknown interpolation {kind!r}; choose cubic or linear")
        keys = np.asarray(keys, dtype=np.float64)
        self.shape = keys.shape[1:]
        self.count = keys.shape[0]
        self.loop = loop
        flat = keys.reshape(self.count, -1)
        if loop and self.count > 1:
            flat = np.concatenate([flat, flat[:1]])
        self.flat = flat
        self.x = np.arange(flat.shape[0], dtype=np.float64)
        self.spline = None
        if kind == "cubic" and flat.shape[0] >= 3:
            from scipy.interpolate import CubicSpline
            self.spline = CubicSpline(self.x, flat, axis=0, bc_type="periodic" if loop else "natural")

    def __call__(self, times) -> np.ndarray:
        t = np.atleast_1d(np.asarray(times, dtype=np.float64))
        if self.count == 1:
            return np.repeat(self.flat[:1], len(t), axis=0).reshape((len(t),) + self.shape)
        t = np.mod(t, self.count) if self.loop else np.clip(t, 0, self.count - 1)
        if self.spline is not None:
            res = self.spline(t)
        else:
            idx = np.clip(np.floor(t).astype(np.int64), 0, len(self.x) - 2)
            frac = (t - idx)[:, None]
            res = self.flat[idx] * (1 - frac) + self.flat[idx + 1] * frac
        on_key = t == np.round(t)                       # exactly the keyframe, bit for bit
        res[on_key] = self.flat[np.round(t[on_key]).astype(np.int64)]
        return res.reshape((len(t),) + self.shape)


def interpolation_frames(G, state: Optional[S.ViewerState] = None, seeds=None, *, grid=(1, 1),
                         w_frames: int = 120, kind: str = "cubic", loop: bool = True,
                         path: str = "orbit", yaw_range: Optional[float] = None,
                         pitch_range: Optional[float] = None, size: Optional[int] = None,
                         depth_side: bool = False, num_keyframes: Optional[int] = None,
                         shuffle_seed: Optional[int] = None) -> Tuple[int, Iterator[np.ndarray]]:
    """(frame count, lazy frame iterator) of a latent walk in w.

    Each grid cell walks through its own keyframe seeds: the seed list is repeated to
    num_keyframes * cells entries (optionally shuffled) and cell k takes entries k*K..k*K+K-1,
    as the official gen_videos does. Keyframe ws are the state's (truncation, style mixing and
    conditioning pose included) for each seed. Frame k * w_frames shows keyframe k exactly.
    The camera follows `path` once over the whole video. With cond_mode 'camera' the keyframe
    ws are re-mapped with each frame's camera before interpolating."""
    base = state or S.ViewerState()
    grid = parse_grid(grid)
    if seeds is None:
        seeds = [base.interp_seed_a, base.interp_seed_b] if base.interp_enabled else None
        if seeds is None:
            raise ExportError("a latent walk needs keyframe seeds (--seeds), e.g. 0-3")
    seeds = parse_seeds(seeds)
    cols, rows = grid
    cells = cols * rows
    if num_keyframes is None:
        if len(seeds) % cells:
            raise ExportError(f"{len(seeds)} seeds cannot be split evenly over a {cols}x{rows} grid; "
                              "give a multiple of the cell count or --num-keyframes")
        num_keyframes = len(seeds) // cells
    if num_keyframes < 1 or w_frames < 1:
        raise ExportError("need num_keyframes >= 1 and w_frames >= 1")
    _check_frames(num_keyframes * w_frames)
    all_seeds = np.array([seeds[i % len(seeds)] for i in range(num_keyframes * cells)], dtype=np.int64)
    if shuffle_seed is not None:
        np.random.RandomState(shuffle_seed).shuffle(all_seeds)
    key_seeds = all_seeds.reshape(cells, num_keyframes)
    total = num_keyframes * w_frames if (loop or num_keyframes == 1) else (num_keyframes - 1) * w_frames + 1
    yaws, pitches = camera_path(path, total, yaw_range, pitch_range, loop=loop)
    follow = base.cond_mode == "camera"
    key_states = [[seed_state(base, int(s)) for s in row] for row in key_seeds]

    def keys_for(c: Optional[torch.Tensor]) -> List[KeyframeInterpolator]:
        with torch.no_grad():
            return [KeyframeInterpolator(torch.cat([S.compute_ws(G, st, c=c) for st in row]).double().cpu().numpy(),
                                         kind, loop) for row in key_states]

    interps = None if follow else keys_for(None)
    renderer = StateRenderer(G, size=size, depth_side=depth_side, cache_size=1)
    device = module_device(G)

    def gen():
        for f in range(total):
            t = f / w_frames
            states = [posed_state(base, yaws[f], pitches[f])] * cells
            fi = keys_for(S.camera_label(states[0], G)) if follow else interps
            ws = [torch.from_numpy(fi[i](t)).to(device=device, dtype=torch.float32) for i in range(cells)]
            yield layout_grid(renderer.render(states, ws, cache=False), grid)

    return total, gen()


def export_interpolation(G, out: PathLike, state: Optional[S.ViewerState] = None, seeds=None, *,
                         grid=None, w_frames: int = 120, kind: str = "cubic", loop: bool = True,
                         path: str = "orbit", yaw_range: Optional[float] = None,
                         pitch_range: Optional[float] = None, size: Optional[int] = None,
                         depth_side: bool = False, num_keyframes: Optional[int] = None,
                         shuffle_seed: Optional[int] = None, video: Optional[VideoOptions] = None,
                         network: Optional[PathLike] = None, progress: Optional[ProgressFn] = None,
                         cancel: Optional[threading.Event] = None, bar: bool = True,
                         overwrite: bool = False, protect: Optional[PathLike] = None) -> Path:
    """Write a latent-walk video (see `interpolation_frames`); default 60 fps as the official.
    An existing output is replaced only if we wrote it, or with overwrite."""
    base = state or S.ViewerState()
    video = video or VideoOptions(fps=60)
    out = Path(out)
    check_frame_side(*_frame_dims(G, base, parse_grid(grid), size, depth_side), MAX_VIDEO_SIDE,
                     "a latent-walk frame")
    _check_video_targets([out], video, overwrite, (network, protect))
    total, gen = interpolation_frames(G, base, seeds, grid=parse_grid(grid), w_frames=w_frames, kind=kind,
                                      loop=loop, path=path, yaw_range=yaw_range, pitch_range=pitch_range,
                                      size=size, depth_side=depth_side, num_keyframes=num_keyframes,
                                      shuffle_seed=shuffle_seed)
    meta = dict(provenance(network), kind="interpolation", seeds=None if seeds is None else parse_seeds(seeds),
                grid=list(parse_grid(grid)), w_frames=w_frames, interpolation=kind, loop=loop, path=path,
                yaw_range=yaw_range, pitch_range=pitch_range, fps=video.fps, shuffle_seed=shuffle_seed,
                state=base.to_dict())
    return _write_video(gen, out, total, video, meta, f"interpolate {out.name}", progress, cancel, bar,
                        overwrite=True)     # checked above


# --------------------------------------------------------------------------------------------
# Still images


def export_images(G, out: PathLike, state: Optional[S.ViewerState] = None, seeds=None, *, grid=None,
                  views: Sequence[Tuple[float, float]] = ((0.0, 0.0),), size: Optional[int] = None,
                  depth_side: bool = False, split_views: bool = False,
                  network: Optional[PathLike] = None, progress: Optional[ProgressFn] = None,
                  cancel: Optional[threading.Event] = None, bar: bool = True,
                  overwrite: bool = False, protect: Optional[PathLike] = None) -> List[Path]:
    """PNG stills with metadata: the checkpoint's path and SHA-256, seed, psi, camera (angles
    and the 25-value label) and the full viewer state, so `--state IMAGE.png` reproduces a view.

    views: (yaw, pitch) offsets in degrees from the state's camera; a seed's views are placed
    side by side (the official gen_samples uses (23, -11.5), (0, -11.5), (-23, -11.5)).
    out ending in .png: one grid image, seeds laid out by `grid` (default one row); out without a
    suffix (or an existing folder) is a folder receiving seed0000.png per seed (seed0000_view0.png...
    with split_views). Existing files are replaced only if we wrote them, or with overwrite."""
    base = state or S.ViewerState()
    cell_seeds = _resolve_seeds(seeds)
    views = [(float(y), float(p)) for y, p in views]
    if not views:
        raise ExportError("no views given")
    if not all(math.isfinite(v) for view in views for v in view):
        raise ExportError(f"view angles must be finite numbers, got {views}")
    out = Path(out)
    single = out.suffix.lower() == ".png"
    protect = (network, protect)
    if single:
        grid = parse_grid(grid) if grid is not None else (len(cell_seeds), 1)
        if len(cell_seeds) > grid[0] * grid[1]:
            raise ExportError(f"{len(cell_seeds)} seeds do not fit a {grid[0]}x{grid[1]} grid")
        check_grid_fill(len(cell_seeds), grid)
        check_frame_side(*_frame_dims(G, base, grid, size, depth_side, len(views)), MAX_IMAGE_SIDE, "the image")
        check_output(out, overwrite, protect)
    else:
        if grid is not None:
            raise ExportError("a grid needs an output ending in .png (one image)")
        if out.suffix and not out.is_dir():
            raise ExportError(f"--out {out}: give a .png file or a folder name without a suffix "
                              f"(not {out.suffix!r})")
        if out.exists() and not out.is_dir():
            raise ExportError(f"{out} exists and is not a folder")
        per_view = split_views and len(views) > 1
        check_frame_side(*_frame_dims(G, base, (1, 1), size, depth_side, 1 if per_view else len(views)),
                         MAX_IMAGE_SIDE, "an image")
        for seed in cell_seeds:
            number = seed_state(base, seed).seed
            names = ([f"seed{number:04d}_view{v}.png" for v in range(len(views))] if per_view
                     else [f"seed{number:04d}.png"])
            for name in names:
                check_output(out / name, overwrite, protect)
        out.mkdir(parents=True, exist_ok=True)
    renderer = StateRenderer(G, size=size, depth_side=depth_side, cache_size=2)
    prov = provenance(network)
    strips, written = [], []

    def describe(st: S.ViewerState) -> dict:
        cam = S.resolved_camera(st, G)
        return dict(cam, label=S.camera_label(st, G)[0].tolist(),
                    conditioning_label=S.conditioning_label(st, G)[0].tolist())

    with Progress(len(cell_seeds), "images", progress, cancel, bar, unit="seed") as prog:
        for seed in cell_seeds:
            st = seed_state(base, seed)
            states = [posed_state(st, y, p) for y, p in views]
            with torch.no_grad():
                ws = None if st.cond_mode == "camera" else S.compute_ws(G, st)
            rgb = renderer.render(states, [ws] * len(states))
            meta = dict(prov, seed=st.seed, psi=st.trunc_psi, trunc_cutoff=st.trunc_cutoff,
                        render=st.render_type, cameras=[describe(s) for s in states])
            if single:
                strips.append(np.concatenate(list(rgb), axis=1))
            elif split_views and len(states) > 1:
                for v, (view_state, view) in enumerate(zip(states, rgb)):
                    written.append(_save_still(view, out / f"seed{st.seed:04d}_view{v}.png",
                                               dict(meta, cameras=[describe(view_state)]), view_state))
            else:
                written.append(_save_still(np.concatenate(list(rgb), axis=1), out / f"seed{st.seed:04d}.png",
                                           meta, states[0] if len(states) == 1 else None))
            prog.update()
    if single:
        image = layout_grid(np.stack(strips), grid)
        seeds_meta = [seed_state(base, s).seed for s in cell_seeds]
        meta = dict(prov, seeds=seeds_meta, grid=list(grid), views=views, psi=base.trunc_psi,
                    trunc_cutoff=base.trunc_cutoff, render=base.render_type)
        only = seed_state(base, cell_seeds[0]) if len(cell_seeds) == 1 and len(views) == 1 else None
        if only is not None:
            only = posed_state(only, *views[0])
        written.append(_save_still(image, out, dict(meta, state=base.to_dict()), only))
    return written


def _save_still(image: np.ndarray, path: Path, meta: dict, view_state: Optional[S.ViewerState]) -> Path:
    """save_png + the viewer's own state key when the image is exactly one view."""
    extra = {S.PNG_STATE_KEY: view_state.to_json(indent=None)} if view_state is not None else None
    return save_png(image, path, meta, extra_text=extra)
