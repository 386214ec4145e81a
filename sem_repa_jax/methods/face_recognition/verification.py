"""How well embeddings tell identities apart: the figures of docs/face_recognizer.md.

embeddings (N, D) with identity labels (N,) and the clip each comes from (N,):
  intra / inter   mean cosine of pairs of one identity (frames of different clips or of one clip)
                  and of pairs of different identities;
  auc             verification ROC AUC of the cosine over those pairs (same identity = positive);
  rank1           identification: each frame of an identity's other clips against one reference
                  per identity (its first clip's first frame), correct if its own is the nearest.
"""
import numpy as np


def roc_auc(scores, positive) -> float:
  """Area under the ROC curve: P(score of a positive > score of a negative), ties counted half
  (the Mann-Whitney U statistic)."""
  scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
  n_pos, n_neg = positive.sum(), (~positive).sum()
  if n_pos == 0 or n_neg == 0:
    raise ValueError(f"roc_auc: {n_pos} positives and {n_neg} negatives; need both")
  order = np.argsort(scores, kind="mergesort")
  s = scores[order]
  ranks = np.empty(len(s))
  # Average ranks (1-based) over ties.
  _, start, counts = np.unique(s, return_index=True, return_counts=True)
  for b, c in zip(start, counts):
    ranks[b:b + c] = b + (c + 1) / 2
  r = np.empty(len(s))
  r[order] = ranks
  return float((r[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def cosine_matrix(embeddings) -> np.ndarray:
  e = np.asarray(embeddings, np.float64)
  e = e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
  return e @ e.T


def verification_figures(embeddings, identities, clips) -> dict:
  """The figures of the module docstring, plus the counts they are over."""
  identities, clips = np.asarray(identities), np.asarray(clips)
  sim = cosine_matrix(embeddings)
  iu = np.triu_indices(len(identities), 1)
  same = identities[iu[0]] == identities[iu[1]]
  scores = sim[iu]
  ids = np.unique(identities)
  ref = np.array([np.flatnonzero((identities == i) & (clips == clips[identities == i].min()))[0]
                  for i in ids])
  queries = np.array([k for k in range(len(identities))
                      if clips[k] != clips[ref[np.searchsorted(ids, identities[k])]]])
  if len(queries):
    nearest = ids[np.argmax(sim[np.ix_(queries, ref)], axis=1)]
    rank1 = float(np.mean(nearest == identities[queries]))
  else:
    rank1 = float("nan")
  intra, inter = float(scores[same].mean()), float(scores[~same].mean())
  return {"intra_cosine": intra, "inter_cosine": inter, "margin": intra - inter,
          "auc": roc_auc(scores, same), "rank1": rank1, "num_identities": int(len(ids)),
          "num_frames": int(len(identities)), "num_queries": int(len(queries))}


def markdown(fig: dict) -> str:
  return ("| identities | frames | intra cos | inter cos | AUC | rank-1 |\n|---|---|---|---|---|---|\n"
          f"| {fig['num_identities']} | {fig['num_frames']} | {fig['intra_cosine']:.3f} | "
          f"{fig['inter_cosine']:.3f} | {fig['auc']:.4f} | {fig['rank1']:.3f} |")
