"""VividPose animation (job `sample`, pipeline 'vividpose'): a reference image driven by skeleton
maps and dense (SMPL-X rendering) pose maps, docs/vividpose.md.

python -m sem_repa_jax.main --config configs/sample_vividpose.py \
  --config.image=ref.png --config.skeletons=driving/skeletons \
  --config.dense_maps=driving/smplx_renders --config.id_embedding=ref_id.npy \
  --config.model_dir=weights/vividpose

model_dir holds unet/ (svd-unet with VividPose's ID group), reference_net/ (sd-unet, the SD 2.1
ReferenceNet), pose_controller/ (vividpose-pose-controller), id_controller/
(vividpose-id-controller), vae/ (svd-vae) and image_encoder/ (clip-vision) of SVD-img2vid, and
arcface/ (python -m conversion arcface) when the reference face is detected; *_dir fields override
each. skeletons, dense_maps: frame folders (frame_<i>.png or <i>.png), one RGB image per frame,
aligned with the video (its aspect; another size is resized); either may be empty (the paper's
ablations), not both, and given both they must have the same number of frames. id_embedding: a
.npy of the reference face's raw 512-d ArcFace embedding, or face_detector (SCRFD .onnx) to detect
and embed it with arcface/ (neither, or no face found: no identity tokens). The defaults are the
paper's geometry (14 frames, 512 wide x 768 high) and SVD-img2vid's sampling values.
"""
import ml_collections

from configs import base, sample_stableanimator


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.job = "sample"
  c.pipeline = "vividpose"
  c.workdir = "runs/sample_vividpose"

  c.image = ""                    # the reference image
  c.skeletons = ""                # folder of the driving skeleton maps (DWPose drawings)
  c.dense_maps = ""               # folder of the dense pose maps (SMPL-X renders, reference shape)
  c.id_embedding = ""             # .npy (512,) raw ArcFace embedding of the reference face, or
  c.face_detector = ""            # an SCRFD .onnx (antelopev2 scrfd_10g_bnkps): detect + embed it
  c.model_dir = ""
  c.unet_dir = ""                 # empty: model_dir/unet (each below likewise)
  c.reference_net_dir = ""
  c.pose_controller_dir = ""
  c.id_controller_dir = ""
  c.vae_dir = ""
  c.image_encoder_dir = ""
  c.arcface_dir = ""

  # pipelines/vividpose.py VividPoseSettings: the paper's 14 frames (0: every map) of 512 x 768,
  # windows of 14, SVD-img2vid's per-frame guidance linspace(1.0, 3.0, F).
  sample_stableanimator.sampling_fields(c, height=768, width=512, num_frames=14,
                                        min_guidance_scale=1.0, tile_size=14)

  c.num_samples = 1
  c.image_fit = "crop"
  return c
