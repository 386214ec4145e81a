"""StableAnimator (CVPR 2025): identity-preserving human image animation on SVD-XT.

posenet.py (PoseNet: skeleton images -> features added after the U-Net's conv_in),
face_encoder.py (FusionFaceId + FacePerceiver: ArcFace embedding + CLIP embedding -> 4 face
tokens), conditioning.py (the U-Net's context [CLIP token, face tokens] and pose features). The
distribution-aware ID adapter is an option of the SVD U-Net (models/svd: extra_context_tokens 4,
id_alignment 'distribution'). docs/stableanimator.md.
"""
