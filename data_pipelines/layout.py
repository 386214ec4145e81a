"""The on-disk dataset layout users produce: a folder of videos, manifest.jsonl, teacher inputs.

```
ROOT/manifest.jsonl       one JSON object per line: {"path", "caption", "split"?, "id"?}
ROOT/<path>               the video (mp4, webm, gif, ...); path is relative to ROOT or absolute
ROOT/depth/<id>.npy|.npz  optional teacher depth, float32 (F, H, W) at the video's frame size, F = the
                          video's frame count or the clip's num_frames; larger = farther unless annotated as disparity
ROOT/faces/<id>.npz       optional face inputs: boxes (F, 4) float32 xyxy pixels, present (F,) bool,
                          optional masks (F, H, W) bool, identity (D,) float32 and size (H, W):
                          all in the video's own pixels (a file of another size is an error)
ROOT/poses/<id>/keypoints.npz         optional pose keypoints (poses/keypoints.py), one row per frame
ROOT/poses/<id>/poses/frame_<i>.png   optional skeleton images at the video's frame size
ROOT/dense/<id>/frame_<i>.png         optional dense pose maps (VividPose's SMPL-X renders), one
                                      RGB image per frame at the video's frame size
```
A clip's `path` may also be a folder of frame_<i>.png images (the official StableAnimator layout,
official_layout.py), read as consecutive frames.
"""
import dataclasses
import json
import os


class ManifestError(ValueError):
  """A manifest line that cannot be used; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class ClipEntry:
  clip_id: str
  path: str          # absolute path of the video
  caption: str
  split: str = "train"


def _clip_id_from_path(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def read_manifest(root: str, split: str | None = None, name: str = "manifest.jsonl"
                  ) -> list[ClipEntry]:
  """Entries of ROOT/manifest.jsonl in file order (optionally one split). Ids must be unique."""
  mpath = os.path.join(root, name)
  if not os.path.isfile(mpath):
    raise ManifestError(f"{mpath}: no manifest; expected one JSON object per line with keys "
                        f"'path' and 'caption' (optional 'split', 'id')")
  entries, seen = [], {}
  with open(mpath) as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise ManifestError(f"{mpath}:{lineno}: not JSON ({e})") from e
      if not isinstance(obj, dict) or "path" not in obj or "caption" not in obj:
        raise ManifestError(f"{mpath}:{lineno}: expected an object with 'path' and 'caption', "
                            f"got {line.strip()[:120]}")
      path = obj["path"] if os.path.isabs(obj["path"]) else os.path.join(root, obj["path"])
      clip_id = str(obj.get("id") or _clip_id_from_path(obj["path"]))
      if clip_id in seen:
        raise ManifestError(f"{mpath}:{lineno}: clip id {clip_id!r} already used on line "
                            f"{seen[clip_id]}; give each line a unique 'id'")
      seen[clip_id] = lineno
      entry = ClipEntry(clip_id, path, str(obj["caption"]), str(obj.get("split") or "train"))
      if split is None or entry.split == split:
        entries.append(entry)
  return entries


def write_manifest(root: str, entries, name: str = "manifest.jsonl") -> str:
  """Writes ROOT/manifest.jsonl atomically, each path made relative to ROOT.

  An entry's path is one usable from here (absolute, or relative to the working directory), as
  `read_manifest` returns them; the manifest stores it relative to ROOT, so the folder can move.
  """
  mpath = os.path.join(root, name)
  tmp = mpath + ".tmp"
  with open(tmp, "w") as f:
    for e in entries:
      rel = os.path.relpath(e.path, root)
      f.write(json.dumps({"id": e.clip_id, "path": rel, "caption": e.caption,
                          "split": e.split}) + "\n")
  os.replace(tmp, mpath)
  return mpath


def depth_path(root: str, clip_id: str) -> str | None:
  for ext in (".npy", ".npz"):
    p = os.path.join(root, "depth", clip_id + ext)
    if os.path.isfile(p):
      return p
  return None


def faces_path(root: str, clip_id: str) -> str | None:
  p = os.path.join(root, "faces", clip_id + ".npz")
  return p if os.path.isfile(p) else None


def poses_root(root: str) -> str:
  """The ROOT of data_pipelines/poses/annotate.py's ROOT/<id>/{keypoints.npz,poses/} inside a
  dataset."""
  return os.path.join(root, "poses")


def dense_dir(root: str, clip_id: str) -> str:
  """The folder of a clip's dense pose maps (frame_<i>.png) inside a dataset."""
  return os.path.join(root, "dense", clip_id)
