"""Video files in and out: decode (mp4, webm, gif, ...), sample frames at a target fps, resize/pad, write.

Frames are uint8 (F, H, W, 3) RGB on the way in and out of files; `to_model_range` maps them to the
[-1, 1] float32 pixels the models take. Decoding uses PyAV; OpenCV is the fallback when PyAV is not
installed. A folder of frame_<i>.png images (`read_frame_folder`) is read as a video's frames.
Every failure a user can cause raises `VideoError` naming the file.
"""
import dataclasses
import os
import re

import numpy as np

try:
  import av
except ImportError:  # PyAV is in requirements.txt; OpenCV still decodes common containers.
  av = None


class VideoError(ValueError):
  """A video that cannot be used: unreadable, corrupt, too short, or of an unexpected shape."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  fps: float
  num_frames: int      # container's count; 0 when the container does not say (some webm files)
  height: int
  width: int


def probe(path: str) -> VideoInfo:
  """Frame rate, frame count and size from the container header, without decoding frames."""
  if not os.path.isfile(path):
    raise VideoError(f"{path}: no such video file")
  if av is None:
    import cv2
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
      raise VideoError(f"{path}: OpenCV cannot open this file")
    info = VideoInfo(float(cap.get(cv2.CAP_PROP_FPS)), int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
                     int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
    cap.release()
    return info
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise VideoError(f"{path}: the file has no video stream")
      s = container.streams.video[0]
      rate = s.average_rate or s.guessed_rate or s.base_rate
      fps = float(rate) if rate else 0.0
      n = int(s.frames or 0)
      if n == 0 and s.duration is not None and s.time_base is not None and fps > 0:
        n = int(round(float(s.duration * s.time_base) * fps))
      return VideoInfo(fps, n, int(s.codec_context.height), int(s.codec_context.width))
  except av.error.FFmpegError as e:
    raise VideoError(f"{path}: not a readable video ({e})") from e


def _decode_av(path: str, last: int, keep) -> dict[int, np.ndarray]:
  out = {}
  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      for i, frame in enumerate(container.decode(stream)):
        if keep(i):
          out[i] = frame.to_ndarray(format="rgb24")
        if last is not None and i >= last:
          break
  except av.error.FFmpegError as e:
    raise VideoError(f"{path}: decoding failed after {len(out)} frames ({e}); the file is corrupt "
                     f"or truncated") from e
  return out


def _decode_cv2(path: str, last: int, keep) -> dict[int, np.ndarray]:
  import cv2
  cap = cv2.VideoCapture(path)
  if not cap.isOpened():
    raise VideoError(f"{path}: OpenCV cannot open this file")
  out, i = {}, 0
  while last is None or i <= last:
    ok, bgr = cap.read()
    if not ok:
      break
    if keep(i):
      out[i] = bgr[..., ::-1].copy()
    i += 1
  cap.release()
  return out


def read_frames(path: str, indices=None) -> np.ndarray:
  """Decodes the frames at `indices` (all frames when None) as uint8 (len, H, W, 3) RGB.

  Decoding is sequential and stops at the largest index, so a short clip from a long file is cheap.
  """
  if not os.path.isfile(path):
    raise VideoError(f"{path}: no such video file")
  wanted = None if indices is None else set(int(i) for i in indices)
  last = None if indices is None else max(wanted)
  keep = (lambda i: True) if wanted is None else (lambda i: i in wanted)
  frames = (_decode_av if av is not None else _decode_cv2)(path, last, keep)
  if not frames:
    raise VideoError(f"{path}: no frame could be decoded")
  if indices is None:
    return np.stack([frames[i] for i in sorted(frames)])
  missing = sorted(wanted - frames.keys())
  if missing:
    raise VideoError(f"{path}: too short: needed frame index {last} but the stream ends after "
                     f"{max(frames) + 1} frames")
  return np.stack([frames[int(i)] for i in indices])


FRAME_FILE = re.compile(r"(?:frame_)?(\d+)\.(?:png|jpg)")


def frame_files(folder: str) -> list[str]:
  """The frame_<i>.png (or <i>.png, .jpg) images of a frames folder, in index order."""
  if not os.path.isdir(folder):
    raise VideoError(f"{folder}: no frames folder")
  named = sorted((int(m.group(1)), f) for f in os.listdir(folder)
                 if (m := FRAME_FILE.fullmatch(f)))
  if not named:
    raise VideoError(f"{folder}: no frame_<i>.png or <i>.png images")
  return [os.path.join(folder, f) for _, f in named]


def read_image(path: str, gray: bool = False) -> np.ndarray:
  """An image file as uint8 RGB (H, W, 3), or (H, W) with gray."""
  import cv2
  img = cv2.imread(path, cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
  if img is None:
    raise VideoError(f"{path}: not a readable image")
  return img if gray else img[..., ::-1]


def write_image(path: str, image_rgb: np.ndarray) -> None:
  """Writes an RGB uint8 (H, W, 3) image (PNG by the extension) atomically."""
  import cv2
  tmp = f"{path}.tmp{os.getpid()}{os.path.splitext(path)[1]}"   # cv2 picks the format by it
  if not cv2.imwrite(tmp, np.ascontiguousarray(np.asarray(image_rgb)[..., ::-1])):
    raise OSError(f"{path}: the image could not be written")
  os.replace(tmp, path)


def read_frame_folder(folder: str, indices=None) -> np.ndarray:
  """The frames at `indices` (all when None) of a frames folder (`frame_files`), uint8 RGB."""
  files = frame_files(folder)
  if indices is not None and len(indices) and max(indices) >= len(files):
    raise VideoError(f"{folder}: too short: needed frame index {max(indices)} but it has "
                     f"{len(files)} frames")
  chosen = files if indices is None else [files[int(i)] for i in indices]
  return np.stack([read_image(f) for f in chosen])


def sample_indices(source_fps: float, num_frames: int, target_fps: float, start: float = 0.0,
                   available: int | None = None, name: str = "video") -> np.ndarray:
  """Source frame indices for `num_frames` frames at `target_fps`, starting `start` seconds in.

  Output frame i shows the source frame on screen at time start + i / target_fps (nearest earlier
  frame), so sampling 8 fps from 24 fps takes every third frame.
  """
  if source_fps <= 0:
    raise VideoError(f"{name}: unknown frame rate; cannot sample at {target_fps} fps")
  if num_frames < 1 or target_fps <= 0:
    raise VideoError(f"{name}: need num_frames >= 1 and target_fps > 0, got {num_frames}, "
                     f"{target_fps}")
  t = start + np.arange(num_frames) / target_fps
  idx = np.floor(t * source_fps + 1e-6).astype(np.int64)
  if available is not None and available > 0 and idx[-1] >= available:
    need = (num_frames - 1) / target_fps + 1 / source_fps
    raise VideoError(f"{name}: too short: {num_frames} frames at {target_fps} fps starting at "
                     f"{start:.3f}s need {need + start:.3f}s ({idx[-1] + 1} source frames at "
                     f"{source_fps:g} fps) but it has {available} frames "
                     f"({available / source_fps:.3f}s)")
  return idx


def resize_geometry(h: int, w: int, height: int, width: int, mode: str = "auto"):
  """(nh, nw, top, left): the frame is scaled to nh x nw and placed with its corner at (top, left)
  of the height x width output (negative offsets crop). Shared by frames, depth maps and face boxes.

  mode 'fit': scale to fit inside and pad, centered; 'cover': scale to cover and crop the center;
  'auto' (SemanticREPA): 'fit' for videos taller than the target aspect (vertical videos are resized
  to the target height and padded to the width), 'cover' otherwise.
  """
  if mode == "auto":
    mode = "fit" if h * width > w * height else "cover"
  if mode == "fit":
    scale = min(height / h, width / w)
    nh, nw = min(height, max(1, round(h * scale))), min(width, max(1, round(w * scale)))
  elif mode == "cover":
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
  else:
    raise ValueError(f"resize mode {mode!r}: expected 'fit', 'cover' or 'auto'")
  return nh, nw, (height - nh) // 2, (width - nw) // 2


def resize_frames(frames: np.ndarray, height: int, width: int, mode: str = "auto",
                  pad_value=0) -> np.ndarray:
  """Resizes (F, H, W[, C]) frames of any dtype to (F, height, width[, C]) (see `resize_geometry`)."""
  import cv2
  h, w = frames.shape[1:3]
  nh, nw, top, left = resize_geometry(h, w, height, width, mode)
  interp = cv2.INTER_AREA if nh < h else cv2.INTER_LINEAR
  resized = np.stack([cv2.resize(fr, (nw, nh), interpolation=interp) for fr in frames])
  resized = resized.reshape((len(frames), nh, nw) + frames.shape[3:])
  out = np.full((len(frames), height, width) + frames.shape[3:], pad_value, frames.dtype)
  src = resized[:, max(0, -top):max(0, -top) + height, max(0, -left):max(0, -left) + width]
  out[:, max(0, top):max(0, top) + src.shape[1], max(0, left):max(0, left) + src.shape[2]] = src
  return out


def resize_boxes(boxes: np.ndarray, h: int, w: int, height: int, width: int,
                 mode: str = "auto") -> np.ndarray:
  """Maps (..., 4) xyxy pixel boxes of an h x w frame through `resize_frames`' geometry (clipped)."""
  nh, nw, top, left = resize_geometry(h, w, height, width, mode)
  b = np.asarray(boxes, np.float32) * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
  b = b + np.array([left, top, left, top], np.float32)
  return np.clip(b, 0, np.array([width, height, width, height], np.float32))


def load_clip(path: str, num_frames: int, fps: float, height: int, width: int,
              start: float = 0.0, mode: str = "auto") -> np.ndarray:
  """The training clip of a video file: `num_frames` uint8 frames at `fps`, resized to height x width."""
  info = probe(path)
  idx = sample_indices(info.fps, num_frames, fps, start, info.num_frames, name=path)
  return resize_frames(read_frames(path, idx), height, width, mode)


def to_model_range(frames: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return frames.astype(np.float32) / 127.5 - 1.0


def to_uint8(frames: np.ndarray) -> np.ndarray:
  """float [-1, 1] (or uint8 already) -> uint8 [0, 255], rounded and clipped."""
  if frames.dtype == np.uint8:
    return frames
  return np.clip(np.round((np.asarray(frames, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def write_video(path: str, frames: np.ndarray, fps: float, crf: int = 18) -> str:
  """Writes (F, H, W, 3) frames (uint8, or float in [-1, 1]) to mp4/webm (PyAV) or gif (PIL).

  The file appears atomically (written under a temporary name first). H.264 needs even sizes, so an
  odd height or width is padded by repeating the last row/column.
  """
  frames = to_uint8(np.asarray(frames))
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise VideoError(f"{path}: expected frames of shape (F, H, W, 3), got {frames.shape}")
  ext = os.path.splitext(path)[1].lower()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}{ext}"
  if ext == ".gif":
    from PIL import Image
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                   duration=int(round(1000 / fps)), loop=0)
  elif ext in (".mp4", ".webm", ".mkv", ".mov"):
    if av is None:
      raise VideoError(f"{path}: writing {ext} needs PyAV (pip install av)")
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
      frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    codec, opts = ("libx264", {"crf": str(crf)}) if ext != ".webm" else ("libvpx-vp9", {})
    from fractions import Fraction
    with av.open(tmp, mode="w") as container:
      stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
      stream.width, stream.height = frames.shape[2], frames.shape[1]
      stream.pix_fmt = "yuv420p"
      stream.options = opts
      for f in frames:
        container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
      container.mux(stream.encode())
  else:
    raise VideoError(f"{path}: unsupported video extension {ext!r} (mp4, webm, mkv, mov, gif)")
  os.replace(tmp, path)
  return path

