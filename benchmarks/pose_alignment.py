"""Pose alignment error: least squares (official), SVD only, and the learned SVD-guided aligner on
held-out synthetic identities at growing misalignment (the pose issue's table; docs/poses.md).

  python -m benchmarks.pose_alignment                     # trains configs/align_poses.py first
  python -m benchmarks.pose_alignment --aligner runs/align_poses/export/pose_aligner
  python -m benchmarks.pose_alignment --steps 500 --json out.json

The figure is the mean keypoint distance over the ground truth's torso length (neck to mid-hip),
with a 95 % interval over the pairs (methods/pose_alignment/evaluation.py). Held-out pairs are
synthetic identities the training never saw (config.eval.seed). Not a timing: the load average is
printed only to say how long the training took and on what.
"""
import argparse
import os
import sys
import time

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness  # noqa: E402


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--aligner", default="", help="an exported pose-aligner folder (else: train one)")
  p.add_argument("--workdir", default="runs/bench_pose_alignment")
  p.add_argument("--steps", type=int, default=0, help="training steps (0: the config's)")
  p.add_argument("--eval-clips", type=int, default=0, help="held-out clips (0: the config's)")
  p.add_argument("--json", default="", help="write the figures here")
  args = p.parse_args(argv)

  from configs import align_poses as align_config
  from sem_repa_jax.jobs import align_poses
  from sem_repa_jax.methods.pose_alignment import evaluation
  from sem_repa_jax.models import load_pretrained

  c = align_config.get_config()
  c.workdir = args.workdir
  if args.steps:
    c.train.num_steps = c.optimizer.decay_steps = args.steps
  if args.eval_clips:
    c.eval.num_clips = args.eval_clips
  trained_s = None
  if args.aligner:
    module, variables = load_pretrained(args.aligner)
    source = args.aligner
  else:
    start = time.perf_counter()
    c.eval.num_clips, eval_clips = 0, c.eval.num_clips    # measured below, once
    align_poses.run(c)
    c.eval.num_clips = eval_clips
    trained_s = time.perf_counter() - start
    source = os.path.join(c.workdir, align_poses.EXPORT)
    module, variables = load_pretrained(source)
  table = align_poses.alignment_table(c, module, variables)
  strong = table["strong"]
  ratios = {"least_squares_over_learned": strong["least_squares"]["mean"] / strong["learned"]["mean"],
            "svd_only_over_learned": strong["svd_only"]["mean"] / strong["learned"]["mean"]}
  print(evaluation.markdown(table))
  print(f"strong misalignment: least squares / learned = {ratios['least_squares_over_learned']:.2f}x,"
        f" SVD only / learned = {ratios['svd_only_over_learned']:.2f}x")
  if trained_s is not None:
    print(f"trained {c.train.num_steps} steps in {trained_s:.0f} s; {harness.load_line()}")
  out = {"aligner": source, "table": table, "strong_ratios": ratios, "train_s": trained_s,
         "steps": c.train.num_steps, "machine": harness.machine()}
  if args.json:
    harness.write_json(args.json, out)
  return out


if __name__ == "__main__":
  main()
