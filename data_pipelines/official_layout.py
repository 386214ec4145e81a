"""The official StableAnimator training layout, checked and indexed into the dataset layout
(layout.py) that the annotation reads, without copying a frame:

```
ROOT/{rec,vec}/<id>/images/frame_<i>.png   the frames, i = 0, 1, ... consecutive
ROOT/{rec,vec}/<id>/faces/frame_<i>.png    face masks, 0/255: the face boxes filled, all 255 where
                                           no face was found
ROOT/{rec,vec}/<id>/poses/frame_<i>.png    skeleton images at the frames' size
ROOT/{rec,vec}/<id>/dense/frame_<i>.png    optional (VividPose): dense pose maps, the SMPL-X
                                           render of each frame at the frames' size
```
`read_layout(ROOT)` lists the clips (id `<rec|vec>_<id>`) and raises LayoutError, one line naming
the folder and what was expected, on a missing folder, a misnamed or missing frame, or folders of
one clip with different frame counts. `index_dataset(ROOT, OUT)` writes, into OUT:
  OUT/manifest.jsonl       one entry per clip, its path the clip's images/ folder (caption "")
  OUT/faces/<id>.npz       per frame the bounding box of the mask's 255 pixels, present = the mask
                           has face pixels and is not all 255, and the frame size
  OUT/poses/<id>/poses     a symbolic link to the clip's poses/ folder
  OUT/dense/<id>           a symbolic link to the clip's dense/ folder, where it has one
so the annotators see the official faces as a face track (its boxes give back the same filled
rectangles) and the official skeletons as drawn pose images.
"""
import dataclasses
import os
import re

import numpy as np

from data_pipelines import layout, video
from data_pipelines.poses import annotate as poses_annotate

SUBSETS = ("rec", "vec")
FOLDERS = ("images", "faces", "poses")
OPTIONAL_FOLDERS = ("dense",)   # VividPose's dense pose maps; a clip without them is indexed
_FRAME = re.compile(r"frame_(\d+)\.png")
_EXPECTED = "ROOT/{rec,vec}/<id>/{images,faces,poses}/frame_<i>.png"


class LayoutError(ValueError):
  """A folder that does not follow the official layout; the message names it."""


@dataclasses.dataclass(frozen=True)
class OfficialClip:
  clip_id: str       # <subset>_<id>
  folder: str        # ROOT/<subset>/<id>
  num_frames: int

  def path(self, kind: str) -> str:
    return os.path.join(self.folder, kind)


def _count_frames(folder: str) -> int:
  if not os.path.isdir(folder):
    raise LayoutError(f"{folder}: missing; expected a folder of frame_<i>.png ({_EXPECTED})")
  names = [f for f in os.listdir(folder) if not f.startswith(".")]
  bad = [f for f in names if not _FRAME.fullmatch(f)]
  if bad:
    raise LayoutError(f"{folder}: {sorted(bad)[0]!r} is not named frame_<i>.png")
  idx = sorted(int(_FRAME.fullmatch(f).group(1)) for f in names)
  if not idx:
    raise LayoutError(f"{folder}: no frame_<i>.png images")
  if idx != list(range(len(idx))):
    gap = next(i for i, j in enumerate(idx) if i != j)
    raise LayoutError(f"{folder}: frame_{gap}.png is missing; expected frame_0.png .. "
                      f"frame_{len(idx) - 1}.png with no gap")
  return len(idx)


def read_layout(root: str) -> list[OfficialClip]:
  """The clips of an official layout, rec/ then vec/, each by id."""
  subsets = [s for s in SUBSETS if os.path.isdir(os.path.join(root, s))]
  if not subsets:
    raise LayoutError(f"{root}: no rec/ or vec/ folder; expected {_EXPECTED}")
  clips = []
  for s in subsets:
    for name in sorted(os.listdir(os.path.join(root, s))):
      folder = os.path.join(root, s, name)
      if name.startswith(".") or not os.path.isdir(folder):
        continue
      kinds = FOLDERS + tuple(k for k in OPTIONAL_FOLDERS
                              if os.path.isdir(os.path.join(folder, k)))
      counts = {k: _count_frames(os.path.join(folder, k)) for k in kinds}
      if len(set(counts.values())) > 1:
        raise LayoutError(f"{folder}: frame counts differ ("
                          + ", ".join(f"{k} {n}" for k, n in counts.items())
                          + "); expected one face mask and one skeleton image per frame"
                          + (" and one dense map" if "dense" in counts else ""))
      clips.append(OfficialClip(f"{s}_{name}", folder, counts["images"]))
  if not clips:
    raise LayoutError(f"{root}: no clip folders in {' or '.join(subsets)}; expected {_EXPECTED}")
  return clips


def boxes_from_masks(masks: np.ndarray):
  """(boxes (F, 4) float32 xyxy, present (F,) bool) of 0/255 masks (F, H, W): the bounding box of
  the face pixels; no face where a mask has none or is all face (the official 'no face found')."""
  on = np.asarray(masks) > 127
  boxes = np.zeros((len(on), 4), np.float32)
  present = on.any((1, 2)) & ~on.all((1, 2))
  for i in np.flatnonzero(present):
    ys, xs = np.nonzero(on[i])
    boxes[i] = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
  return boxes, present


def _write_faces(clip: OfficialClip, path: str) -> None:
  files = video.frame_files(clip.path("faces"))
  masks = np.stack([video.read_image(f, gray=True) for f in files])
  size = video.read_image(os.path.join(clip.path("images"), "frame_0.png")).shape[:2]
  if masks.shape[1:3] != size:
    raise LayoutError(f"{clip.path('faces')}: masks of {masks.shape[1]}x{masks.shape[2]}, but "
                      f"the frames are {size[0]}x{size[1]}")
  boxes, present = boxes_from_masks(masks)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    np.savez(f, boxes=boxes, present=present, size=np.asarray(size, np.int64))
  os.replace(tmp, path)


def index_dataset(root: str, out: str) -> list[layout.ClipEntry]:
  """Indexes the official layout at ROOT into the dataset layout at OUT (see the module
  docstring); returns the manifest entries. Clips indexed before are kept."""
  clips = read_layout(root)
  os.makedirs(os.path.join(out, "faces"), exist_ok=True)
  entries = []
  for c in clips:
    fpath = os.path.join(out, "faces", c.clip_id + ".npz")
    if not os.path.isfile(fpath):
      _write_faces(c, fpath)
    link = poses_annotate.poses_dir(layout.poses_root(out), c.clip_id)
    if not os.path.islink(link):
      os.makedirs(os.path.dirname(link), exist_ok=True)
      os.symlink(os.path.abspath(c.path("poses")), link)
    dense = layout.dense_dir(out, c.clip_id)
    if os.path.isdir(c.path("dense")) and not os.path.islink(dense):
      os.makedirs(os.path.dirname(dense), exist_ok=True)
      os.symlink(os.path.abspath(c.path("dense")), dense)
    entries.append(layout.ClipEntry(c.clip_id, os.path.abspath(c.path("images")), ""))
  layout.write_manifest(out, entries)
  return entries
