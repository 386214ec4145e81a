"""StableAnimator++'s learnable SVD-guided pose alignment: similarity.py (similarity transforms,
the Procrustes fit by SVD), aligner.py (the PoseAligner network), objective.py (misalignment,
loss, error), baselines.py (least squares as the official code, SVD only), evaluation.py (the
table). docs/poses.md.
"""
