"""Poses: the shared keypoint format (keypoints.py), the DWPose teacher (dwpose.py), skeleton images
(draw.py) and the annotation of clips into keypoints and skeleton frames (annotate.py)."""
