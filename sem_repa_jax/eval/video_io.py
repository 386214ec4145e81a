"""Report assets from uint8 frames: animated GIFs and PNG strips (frames side by side); and reading
a video stored as a folder of PNG frames (`read_frame_folder`), one of the evaluate job's inputs.

Reading and writing mp4 lives in data_pipelines/video.py. Files are written
to a temporary name in the target folder and renamed, so a reader never sees half a file.
"""
import io
import os
import tempfile
from typing import Optional

import numpy as np


def to_uint8(video) -> np.ndarray:
  """Pixels in [-1, 1] (any shape) -> uint8, clipping what lies outside."""
  video = np.asarray(video, dtype=np.float32)
  return np.round((np.clip(video, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def as_rgb_frames(frames, name: str = "video") -> np.ndarray:
  """(F, H, W), (F, H, W, 1) or (F, H, W, 3) uint8 -> (F, H, W, 3) uint8; a clear error otherwise."""
  frames = np.asarray(frames)
  if frames.dtype != np.uint8:
    raise ValueError(f"{name}: expected uint8 frames (convert [-1, 1] video with to_uint8); got {frames.dtype}")
  if frames.ndim == 3:
    frames = frames[..., None]
  if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or 0 in frames.shape:
    raise ValueError(f"{name}: expected frames (F, H, W), (F, H, W, 1) or (F, H, W, 3); got shape {frames.shape}")
  return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def write_bytes(path: str, data: bytes) -> str:
  """Writes data to a temporary file beside path, then renames it to path."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, 0o644)   # mkstemp makes 0600; reports are meant to be shared
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def gif_bytes(frames, *, fps: float = 8.0, loop: int = 0, name: str = "gif") -> bytes:
  """Animated GIF of frames (F, H, W[, C]) uint8 at fps (GIF timing is in 1/100 s), looping forever
  by default. Each frame gets its own 256-colour palette. Pillow merges consecutive identical frames
  into one longer frame, so playback time is kept but the stored frame count can be smaller."""
  from PIL import Image
  frames = as_rgb_frames(frames, name)
  if not fps > 0:
    raise ValueError(f"{name}: fps must be positive; got {fps!r}")
  duration = max(10, int(round(100.0 / fps)) * 10)
  images = [Image.fromarray(f) for f in frames]
  buf = io.BytesIO()
  images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=loop)
  return buf.getvalue()


def png_bytes(image, name: str = "png") -> bytes:
  """PNG of an (H, W[, 3]) uint8 image."""
  from PIL import Image
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim not in (2, 3):
    raise ValueError(f"{name}: expected an (H, W) or (H, W, 3) uint8 image; got {image.dtype} {image.shape}")
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  return buf.getvalue()


def write_gif(path: str, frames, *, fps: float = 8.0, loop: int = 0) -> str:
  """`gif_bytes` written atomically to path."""
  return write_bytes(path, gif_bytes(frames, fps=fps, loop=loop, name=path))


def frame_strip(frames, *, max_frames: Optional[int] = None, gap: int = 2, gap_value: int = 255) -> np.ndarray:
  """Frames side by side in one (H, W', 3) uint8 image, gap pixels apart; at most max_frames, taken
  evenly from first to last."""
  frames = as_rgb_frames(frames, "frame_strip")
  if max_frames is not None and max_frames < len(frames):
    if max_frames < 1:
      raise ValueError(f"frame_strip: max_frames must be >= 1; got {max_frames}")
    frames = frames[np.unique(np.round(np.linspace(0, len(frames) - 1, max_frames)).astype(int))]
  f, h, w, _ = frames.shape
  strip = np.full((h, f * w + (f - 1) * gap, 3), gap_value, np.uint8)
  for i, frame in enumerate(frames):
    strip[:, i * (w + gap):i * (w + gap) + w] = frame
  return strip


def write_png(path: str, image) -> str:
  """`png_bytes` written atomically to path."""
  return write_bytes(path, png_bytes(image, name=path))


FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")


def frame_files(folder: str) -> list:
  """The image files of a frame folder in frame order (names sorted; 'frame_10' after 'frame_9'
  when the numbers are not zero-padded)."""
  import re
  names = [n for n in os.listdir(folder) if n.lower().endswith(FRAME_SUFFIXES)]
  key = lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]
  return [os.path.join(folder, n) for n in sorted(names, key=key)]


def read_frame_folder(folder: str) -> np.ndarray:
  """A folder of PNG/JPEG frames -> uint8 (F, H, W, 3) RGB; a one-line error naming the folder or
  file when it is empty, unreadable or its frames differ in size."""
  from PIL import Image
  files = frame_files(folder) if os.path.isdir(folder) else None
  if not files:
    raise ValueError(f"{folder}: expected a folder of {'/'.join(FRAME_SUFFIXES)} frames; found none")
  frames = []
  for path in files:
    try:
      with Image.open(path) as im:
        frames.append(np.asarray(im.convert("RGB")))
    except OSError as e:
      raise ValueError(f"{path}: cannot read as an image ({e})") from None
    if frames[-1].shape != frames[0].shape:
      raise ValueError(f"{path}: frame of size {frames[-1].shape[:2]}, but {files[0]} is "
                       f"{frames[0].shape[:2]}")
  return np.stack(frames)
