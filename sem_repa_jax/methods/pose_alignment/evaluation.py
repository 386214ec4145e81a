"""The alignment table: least squares, SVD only and the learned aligner on held-out pairs at growing
misalignment (the pose issue's evaluation; benchmarks/pose_alignment.py and docs/poses.md).

Each level perturbs every held-out driving pose once (objective.misalign, a fixed key per level),
every method aligns the perturbed pose onto the reference, and the figure is
objective.alignment_error (mean point distance over the ground truth's torso length) averaged over
the pairs with a 95 % normal interval (1.96 standard errors). 'unaligned' is the perturbed pose as
it is. Pairs whose ground truth lacks the neck or a hip have no torso length and are left out.
"""
import jax
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.methods.pose_alignment import baselines, objective, similarity

LEVELS = {
    "mild": objective.Misalignment(10.0, (0.8, 1.25), 0.1),
    "medium": objective.Misalignment(20.0, (0.67, 1.5), 0.2),
    "strong": objective.Misalignment(30.0, (0.5, 2.0), 0.3),
}
METHODS = ("unaligned", "least_squares", "svd_only", "learned")


def summarize(errors) -> dict:
  e = np.asarray(errors, np.float64)
  e = e[np.isfinite(e)]
  if len(e) < 2:
    raise ValueError(f"{len(e)} pairs with a torso length; at least 2 are needed for an interval")
  return {"mean": float(e.mean()), "ci95": float(1.96 * e.std(ddof=1) / np.sqrt(len(e))),
          "n": int(len(e))}


def evaluate(learned, pairs: dict, levels=None, seed: int = 0) -> dict:
  """{level: {method: summarize(...)}}. `learned(reference, reference_scores, driving,
  driving_scores) -> Similarity` (None: the learned row is left out); `pairs`: {field: (N, ...)} as
  data_pipelines/poses/pairs.PosePairSource.arrays gives."""
  levels = LEVELS if levels is None else levels
  p = {k: jnp.asarray(v) for k, v in pairs.items()}
  ref, ref_s, truth, truth_s = p["reference"], p["reference_scores"], p["driving"], \
      p["driving_scores"]
  out = {}
  for i, (name, level) in enumerate(levels.items()):
    drv, drv_s, _ = objective.misalign(jax.random.fold_in(jax.random.key(seed), i), truth,
                                       truth_s, level)
    fits = {"least_squares": baselines.least_squares(ref, ref_s, drv, drv_s),
            "svd_only": baselines.svd_only(ref, ref_s, drv, drv_s)}
    if learned is not None:
      fits["learned"] = learned(ref, ref_s, drv, drv_s)
    aligned = {"unaligned": drv, **{m: similarity.apply(s, drv) for m, s in fits.items()}}
    out[name] = {m: summarize(objective.alignment_error(a, truth, truth_s))
                 for m, a in aligned.items()}
  return out


def markdown(table: dict) -> str:
  """The table as markdown: one row per level, one column per method (mean +- ci95)."""
  methods = [m for m in METHODS if any(m in row for row in table.values())]
  lines = ["| misalignment | " + " | ".join(methods) + " |",
           "|---|" + "---|" * len(methods)]
  for level, row in table.items():
    cells = [f"{row[m]['mean']:.4f} ± {row[m]['ci95']:.4f}" for m in methods]
    lines.append(f"| {level} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
