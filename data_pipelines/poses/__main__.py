"""`python -m data_pipelines.poses dwpose|synthetic ...`: clips -> ROOT/<id>/keypoints.npz and
ROOT/<id>/poses/frame_<i>.png (annotate.py; docs/poses.md).

  dwpose     --models DIR (yolox_l.onnx, dw-ll_ucoco_384.onnx) --video V | --frames DIR --out ROOT
  synthetic  --root SYN (a synthetic dataset: manifest.jsonl, faces/<id>.npz) --out ROOT
"""
import argparse
import os
import sys


def _dwpose(args) -> list:
  from data_pipelines import video
  from data_pipelines.poses import annotate, dwpose
  teacher = dwpose.DWPose(os.path.join(args.models, dwpose.DETECTOR_FILE),
                          os.path.join(args.models, dwpose.POSE_FILE), person=args.person,
                          providers=args.providers)
  source = args.video or args.frames
  frames = video.read_frames(args.video) if args.video else \
      video.read_frame_folder(args.frames)
  clip_id = args.id or os.path.splitext(os.path.basename(os.path.normpath(source)))[0]
  annotate.annotate_frames(frames, args.out, clip_id, teacher, ref_short=args.ref_short,
                           images=not args.no_images)
  return [clip_id]


def _synthetic(args) -> list:
  from data_pipelines import layout
  from data_pipelines.poses import annotate
  done = []
  for e in layout.read_manifest(args.root, args.split):
    faces = layout.faces_path(args.root, e.clip_id) or \
        os.path.join(args.root, "faces", e.clip_id + ".npz")
    kp = annotate.synthetic_clip_keypoints(faces)
    annotate.write_poses(args.out, e.clip_id, kp, ref_short=args.ref_short,
                         images=not args.no_images)
    done.append(e.clip_id)
  return done


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m data_pipelines.poses",
                                   description="Pose keypoints and skeleton images of clips.")
  sub = parser.add_subparsers(dest="source", required=True)
  d = sub.add_parser("dwpose", help="run DWPose on a video or a folder of frames")
  d.add_argument("--models", required=True, help="folder with yolox_l.onnx, dw-ll_ucoco_384.onnx")
  src = d.add_mutually_exclusive_group(required=True)
  src.add_argument("--video")
  src.add_argument("--frames", help="folder of frame_<i>.png")
  d.add_argument("--id", default=None, help="clip id (default: the video or folder name)")
  d.add_argument("--person", default="score", choices=["score", "largest"])
  d.add_argument("--providers", nargs="*", default=None,
                 help="onnxruntime providers, e.g. CUDAExecutionProvider")
  s = sub.add_parser("synthetic", help="the synthetic generator's exact keypoints")
  s.add_argument("--root", required=True, help="a synthetic dataset (synthetic.write_dataset)")
  s.add_argument("--split", default=None)
  for p in (d, s):
    p.add_argument("--out", required=True, help="ROOT of ROOT/<id>/{keypoints.npz,poses/}")
    p.add_argument("--ref-short", type=int, default=2160,
                   help="shorter side of the drawing canvas (StableAnimator: 2160); 0: frame size")
    p.add_argument("--no-images", action="store_true", help="keypoints only (draw later)")
  args = parser.parse_args(argv)
  args.ref_short = args.ref_short or None
  try:
    done = (_dwpose if args.source == "dwpose" else _synthetic)(args)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote poses of {len(done)} clip(s) under {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
