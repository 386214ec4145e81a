"""`python -m conversion <kind> --src SRC --dst DST [--dtype float32|bfloat16] [--variant fp16]
[--config CONFIG]` (--config: for kinds whose single-file sources carry no config, e.g. svd-unet
from StableAnimator's unet.pth)."""
import argparse
import inspect
import sys

from conversion import available_kinds
from conversion.mapping import ConversionError
from conversion.safetensors_io import CheckpointError


def main(argv=None) -> int:
  kinds = available_kinds()
  parser = argparse.ArgumentParser(prog="python -m conversion",
                                   description="Convert a public PyTorch/ONNX checkpoint to Orbax.")
  sub = parser.add_subparsers(dest="kind", metavar="kind", required=True)
  for kind, mod in sorted(kinds.items()):
    p = sub.add_parser(kind, help=getattr(mod, "HELP", ""))
    p.add_argument("--src", required=True, help="what users download (model folder or file)")
    p.add_argument("--dst", required=True, help="output folder: config.json + Orbax variables")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--variant", default=None,
                   help="weights variant of a diffusers/transformers folder, e.g. fp16 for "
                        "*.fp16.safetensors (default: the files without one)")
    if "config" in inspect.signature(mod.convert).parameters:
      p.add_argument("--config", default=None,
                     help="model folder or config.json describing SRC when SRC is one file "
                          "without its config (e.g. a .pth state dict)")
  args = parser.parse_args(argv)
  extra = {"config": args.config} if getattr(args, "config", None) is not None else {}
  try:
    dst = kinds[args.kind].convert(args.src, args.dst, dtype=args.dtype, variant=args.variant,
                                   **extra)
  except (ConversionError, CheckpointError, OSError, ValueError) as e:
    # What a user can cause (a path, a file, a checkpoint that does not fit): one line, exit 2,
    # as `python -m sem_repa_jax.main` reports them.
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {dst}")
  return 0


def entry():
  """The `sem-repa-convert` command."""
  sys.exit(main())


if __name__ == "__main__":
  entry()
