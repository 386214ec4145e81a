"""ArcFace IResNet (insightface) from a public .onnx file (glintr100.onnx, w600k_r50.onnx, ...) or
an arcface_torch .pth state dict, into sem_repa_jax.models.encoders.arcface.IResNet.

ONNX files name their initializers arbitrarily (numbers, 'onnx::Conv_683'), so the graph is walked
by data flow from the input, and each weight is read through the node input that uses it and given
its insightface module name (conv1, layer1.0.bn1, ..., fc, features). Both files then go through the
same strict Rules. The walk checks every op's attributes (kernel, stride, padding, groups) and that
every initializer of the file is used. Exporters that merged each conv+BN pair into a conv with bias
(PyTorch's ONNX exporter does) give the folded parameter layout; files with separate BN nodes and
.pth files give the unfolded one. Depth, widths, feature size, BN epsilon and any input
normalization inside the graph (Sub/Mul on 0..255 pixels in mxnet conversions) are read from the file.
"""
import os

import numpy as np

from conversion import driver, mapping
from conversion.mapping import ConversionError, DictSource, Rule
from conversion.safetensors_io import CheckpointError
from sem_repa_jax.models.registry import factory_of

KIND = "arcface"
HELP = "insightface ArcFace IResNet (r18/34/50/100) from an .onnx file or a .pth state dict"
FACTORY = factory_of(KIND)


def _bn_rules(src, params, stats, stack=None):
  return [Rule(src + r"\.weight", params + "/scale", stack=stack),
          Rule(src + r"\.bias", params + "/bias", stack=stack),
          Rule(src + r"\.running_mean", stats + "/mean", stack=stack),
          Rule(src + r"\.running_var", stats + "/var", stack=stack)]


def _conv_bn_rules(conv, bn, dst, stack=None):
  return ([Rule(conv + r"\.weight", f"params/{dst}/conv/kernel", mapping.conv2d, stack),
           Rule(conv + r"\.bias", f"params/{dst}/conv/bias", stack=stack)]
          + _bn_rules(bn, f"params/{dst}/bn", f"batch_stats/{dst}/bn", stack))


def _block_rules(src, dst, stack=None):
  return (_bn_rules(src + r"\.bn1", f"params/{dst}/bn1", f"batch_stats/{dst}/bn1", stack)
          + _conv_bn_rules(src + r"\.conv1", src + r"\.bn2", f"{dst}/conv1", stack)
          + [Rule(src + r"\.prelu\.weight", f"params/{dst}/prelu/alpha", stack=stack)]
          + _conv_bn_rules(src + r"\.conv2", src + r"\.bn3", f"{dst}/conv2", stack)
          + _conv_bn_rules(src + r"\.downsample\.0", src + r"\.downsample\.1", f"{dst}/downsample",
                           stack))


# Source names are insightface's, with blocks 1.. of a stage renamed layerS.rest.(I-1) so that
# the stacked (nn.scan) target gets 0-based layer indices.
RULES = (_conv_bn_rules(r"conv1", r"bn1", "conv1")
         + [Rule(r"prelu\.weight", "params/prelu/alpha")]
         + _block_rules(r"layer(\d)\.0", r"layer\1_0")
         + _block_rules(r"layer(\d)\.rest\.(\d+)", r"layer\1_rest", stack=2)
         + _bn_rules(r"bn2", "params/bn2", "batch_stats/bn2")
         + [Rule(r"fc\.weight", "params/fc/kernel", mapping.linear),
            Rule(r"fc\.bias", "params/fc/bias")]
         + _bn_rules(r"features", "params/features", "batch_stats/features"))


def _rename_scanned(arrays: dict) -> dict:
  import re
  out = {}
  for name, a in arrays.items():
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(.*)", name)
    if m and int(m.group(2)) > 0:
      name = f"layer{m.group(1)}.rest.{int(m.group(2)) - 1}.{m.group(3)}"
    out[name] = a
  return out


def _config_from_arrays(arrays: dict, src: str, **extra):
  """IResNetConfig from insightface-named arrays: depth from block indices, sizes from shapes."""
  import re
  from sem_repa_jax.models.encoders.arcface import IResNetConfig
  need = ["conv1.weight", "fc.weight"] + [f"layer{s}.0.conv1.weight" for s in (1, 2, 3, 4)]
  missing = [n for n in need if n not in arrays]
  if missing:
    raise ConversionError(src, [f"missing {n!r}: not an insightface IResNet checkpoint "
                                "(expected conv1, layer1..4, bn2, fc, features)" for n in missing])
  layers = []
  for s in (1, 2, 3, 4):
    idx = {int(m.group(1)) for n in arrays for m in [re.match(rf"layer{s}\.(\d+)\.", n)] if m}
    layers.append(max(idx) + 1)
  widths = [int(arrays[f"layer{s}.0.conv1.weight"].shape[0]) for s in (1, 2, 3, 4)]
  fc_out, fc_in = arrays["fc.weight"].shape
  side = int(round(np.sqrt(fc_in / widths[3])))
  if side * side * widths[3] != fc_in:
    raise ConversionError(src, [f"fc.weight {arrays['fc.weight'].shape}: in_features {fc_in} is "
                                f"not {widths[3]} channels x a square of positions"])
  return IResNetConfig(layers=tuple(layers), widths=tuple(widths), num_features=int(fc_out),
                       input_size=16 * side, **extra)


# ---------------------------------------------------------------------------------------------
# ONNX graph walk


class _Graph:
  """Constants folded, pass-through ops removed, consumers indexed."""

  PASSTHROUGH = {"Identity", "Dropout"}
  CONST_OPS = {"Identity", "Unsqueeze", "Squeeze", "Reshape", "Cast", "Constant"}

  def __init__(self, path):
    import onnx
    from onnx import numpy_helper
    self.path = path
    try:
      model = onnx.load(path)
    except Exception as e:  # protobuf decode errors have no common base class
      raise CheckpointError(f"{path}: cannot parse as an ONNX model: {e}") from e
    g = model.graph
    self.initializers = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    self.const = dict(self.initializers)
    self.origin = {n: {n} for n in self.initializers}   # constant -> initializers it comes from
    self.used = set()
    self.alias = {}
    self.nodes = []
    for node in g.node:
      ins = [i for i in node.input if i]
      if node.op_type == "Constant":
        self.const[node.output[0]] = numpy_helper.to_array(node.attribute[0].t) \
            if node.attribute[0].type == onnx.AttributeProto.TENSOR else \
            np.asarray(onnx.helper.get_attribute_value(node.attribute[0]))
        self.origin[node.output[0]] = set()
      elif node.op_type in self.CONST_OPS and ins and all(i in self.const for i in ins):
        self.const[node.output[0]] = self._fold(node)
        self.origin[node.output[0]] = set().union(*(self.origin[i] for i in ins))
      elif node.op_type in self.PASSTHROUGH:
        self.alias[node.output[0]] = self.name(node.input[0])
      else:
        self.nodes.append(node)
    self.consumers = {}
    for node in self.nodes:
      for i in node.input:
        if i and i not in self.const:
          self.consumers.setdefault(self.name(i), []).append(node)
    inputs = [i.name for i in g.input if i.name not in self.initializers]
    if len(inputs) != 1 or len(g.output) != 1:
      raise CheckpointError(f"{path}: expected one image input and one embedding output, found "
                            f"inputs {inputs} and outputs {[o.name for o in g.output]}")
    self.input = inputs[0]
    self.output = self.name(g.output[0].name)

  def _fold(self, node):
    import onnx
    v = [self.const[i] for i in node.input if i]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Identity":
      return v[0]
    if node.op_type == "Cast":
      return v[0].astype(onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if node.op_type == "Reshape":
      return v[0].reshape([d if d != 0 else v[0].shape[k] for k, d in enumerate(v[1].tolist())])
    axes = attrs.get("axes", v[1].tolist() if len(v) > 1 else None)
    if node.op_type == "Unsqueeze":
      out = v[0]
      for a in sorted(int(a) % (out.ndim + len(axes)) for a in axes):
        out = np.expand_dims(out, a)
      return out
    return np.squeeze(v[0], axis=None if axes is None else tuple(int(a) for a in axes))

  def name(self, t):
    while t in self.alias:
      t = self.alias[t]
    return t

  def get(self, node, k, what):
    """The constant at input k of node, marking the initializers behind it used."""
    if len(node.input) <= k or not node.input[k]:
      raise self.error(node, f"has no input {k} ({what})")
    t = node.input[k]
    if t not in self.const:
      raise self.error(node, f"input {k} ({what}) {t!r} is computed, not a stored weight")
    self.used |= self.origin[t]
    return np.asarray(self.const[t], np.float32)

  def error(self, node, msg):
    return CheckpointError(f"{self.path}: node {node.name or node.op_type!r} ({node.op_type}) {msg}")

  def next(self, t, op_types, context):
    cands = [n for n in self.consumers.get(self.name(t), []) if n.op_type in op_types]
    if len(cands) != 1:
      found = [n.op_type for n in self.consumers.get(self.name(t), [])]
      raise CheckpointError(f"{self.path}: {context}: expected one {'/'.join(op_types)} consuming "
                            f"{t!r}, found consumers {found}; not an insightface IResNet graph")
    return cands[0]

  def attrs(self, node):
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _read_onnx(path: str):
  """(insightface-named arrays, {'folded', 'bn_eps', 'input_scale', 'input_shift'}) of a file."""
  g = _Graph(path)
  arrays, eps_seen, folded_seen = {}, set(), set()

  def bn(node, name):
    a = g.attrs(node)
    if a.get("training_mode", 0):
      raise g.error(node, "is in training mode; export the model in eval mode")
    eps_seen.add(round(float(a.get("epsilon", 1e-5)), 12))
    for k, field in enumerate(("weight", "bias", "running_mean", "running_var"), start=1):
      arrays[f"{name}.{field}"] = g.get(node, k, f"{name}.{field}")
    return node.output[0]

  def conv_bn(t, conv_name, bn_name, kernel, stride, context):
    node = g.next(t, {"Conv"}, context)
    a = g.attrs(node)
    pad = kernel // 2
    want = dict(kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4,
                group=1, dilations=[1, 1])
    defaults = dict(strides=[1, 1], pads=[0, 0, 0, 0], group=1, dilations=[1, 1])
    for key, value in want.items():
      got = a.get(key, defaults.get(key))
      got = list(got) if isinstance(got, (list, tuple)) else got
      if got != value:
        raise g.error(node, f"({context}) has {key}={got}, expected {value}")
    arrays[f"{conv_name}.weight"] = g.get(node, 1, f"{conv_name}.weight")
    has_bias = len(node.input) > 2 and bool(node.input[2])
    out = node.output[0]
    after = g.consumers.get(g.name(out), [])
    if len(after) == 1 and after[0].op_type == "BatchNormalization":
      if has_bias:
        raise g.error(node, f"({context}) has a bias and a BatchNormalization after it; "
                            "insightface convs have one or the other")
      folded_seen.add(False)
      return bn(after[0], bn_name)
    if not has_bias:
      raise g.error(node, f"({context}) has neither a bias (merged BN) nor a BatchNormalization "
                          "after it")
    folded_seen.add(True)
    arrays[f"{conv_name}.bias"] = g.get(node, 2, f"{conv_name}.bias")
    return out

  def prelu(t, name, context):
    node = g.next(t, {"PRelu"}, context)
    arrays[name] = g.get(node, 1, name).reshape(-1)
    return node.output[0]

  # Normalization inside the graph (x_graph = a * x_pixels + b on 0..255 pixels). Our inputs are
  # u = (x_pixels - 127.5) / 127.5, so x_graph = (127.5 a) u + (127.5 a + b).
  t, a, b = g.input, 1.0, 0.0
  while True:
    cands = g.consumers.get(g.name(t), [])
    if len(cands) != 1 or cands[0].op_type not in ("Sub", "Mul", "Div", "Add"):
      break
    node = cands[0]
    k_const = [k for k, i in enumerate(node.input) if g.name(i) != g.name(t)]
    if (len(k_const) != 1 or node.input[k_const[0]] not in g.const
        or (node.op_type in ("Sub", "Div") and k_const[0] != 1)):
      raise g.error(node, "normalizes the input in a way this converter does not know "
                          "(expected x - c, x * c, x / c, x + c with constant c)")
    c = np.unique(g.get(node, k_const[0], "input normalization"))
    if c.size != 1:
      raise g.error(node, f"normalizes channels differently ({c}); expected one constant")
    c = float(c[0])
    a, b = {"Sub": (a, b - c), "Add": (a, b + c), "Mul": (a * c, b * c),
            "Div": (a / c, b / c)}[node.op_type]
    t = node.output[0]
  normalization = (1.0, 0.0) if t == g.input else (127.5 * a, 127.5 * a + b)

  t = conv_bn(t, "conv1", "bn1", 3, 1, "stem")
  t = prelu(t, "prelu.weight", "stem")
  stage, block = 0, 0
  while True:
    bn_node = g.next(t, {"BatchNormalization"}, f"after block layer{stage}.{block - 1}")
    heads = [n.op_type for n in g.consumers.get(g.name(bn_node.output[0]), [])]
    if heads != ["Conv"]:
      break
    # The stage's first block is the one that downsamples (stride 2 on conv2 and the shortcut).
    conv2_stride = _peek_conv2_stride(g, bn_node)
    if conv2_stride == 2:
      stage, block = stage + 1, 0
    if stage == 0 or stage > 4:
      raise g.error(bn_node, f"starts a block outside stages 1..4 (stride {conv2_stride})")
    p = f"layer{stage}.{block}"
    u = bn(bn_node, f"{p}.bn1")
    u = conv_bn(u, f"{p}.conv1", f"{p}.bn2", 3, 1, p)
    u = prelu(u, f"{p}.prelu.weight", p)
    u = conv_bn(u, f"{p}.conv2", f"{p}.bn3", 3, conv2_stride, p)
    add = g.next(u, {"Add"}, f"{p} residual")
    other = [g.name(i) for i in add.input if g.name(i) != g.name(u)]
    if block == 0:
      v = conv_bn(t, f"{p}.downsample.0", f"{p}.downsample.1", 1, 2, f"{p} shortcut")
      if other != [g.name(v)]:
        raise g.error(add, f"({p}) does not add the projected shortcut")
    elif other != [g.name(t)]:
      raise g.error(add, f"({p}) does not add the block input")
    t, block = add.output[0], block + 1
  if stage != 4:
    raise g.error(bn_node, f"ends the convolutional trunk after {stage} stages; expected 4")

  t = bn(bn_node, "bn2")
  flat = g.next(t, {"Flatten", "Reshape"}, "flatten before fc")
  if flat.op_type == "Flatten" and g.attrs(flat).get("axis", 1) != 1:
    raise g.error(flat, "flattens from an axis other than 1")
  # x.view(B, -1) exports compute the target shape from the input (Shape/Gather/Concat): only a
  # stored shape is checked (and counted as used).
  if (flat.op_type == "Reshape" and flat.input[1] in g.const
      and g.get(flat, 1, "flatten shape").shape != (2,)):
    raise g.error(flat, "reshapes to other than (batch, features)")
  t = flat.output[0]
  fc = g.next(t, {"Gemm", "MatMul"}, "fc")
  if fc.op_type == "Gemm":
    at = g.attrs(fc)
    if at.get("transA", 0) or at.get("alpha", 1.0) != 1.0 or at.get("beta", 1.0) != 1.0:
      raise g.error(fc, f"has attributes {at}; expected transA=0, alpha=beta=1")
    w = g.get(fc, 1, "fc.weight")
    arrays["fc.weight"] = w if at.get("transB", 0) else w.T
    arrays["fc.bias"] = g.get(fc, 2, "fc.bias")
    t = fc.output[0]
  else:
    arrays["fc.weight"] = g.get(fc, 1, "fc.weight").T
    add = g.next(fc.output[0], {"Add"}, "fc bias")
    k_bias = [k for k, i in enumerate(add.input) if g.name(i) != g.name(fc.output[0])]
    arrays["fc.bias"] = g.get(add, k_bias[0], "fc.bias")
    t = add.output[0]
  t = bn(g.next(t, {"BatchNormalization"}, "features"), "features")
  if g.name(t) != g.output:
    raise CheckpointError(f"{path}: the graph goes on after the features BatchNormalization "
                          f"(output {g.output!r}); expected it to be the embedding")
  unused = sorted(set(g.initializers) - g.used)
  if unused:
    raise ConversionError(path, [f"unused initializer {n!r} {g.initializers[n].shape}: the walk "
                                 "of the IResNet graph never reads it" for n in unused])
  if len(folded_seen) != 1:
    raise CheckpointError(f"{path}: some convs have merged BatchNorms and some do not")
  if len(eps_seen) != 1:
    raise CheckpointError(f"{path}: BatchNormalization epsilons differ: {sorted(eps_seen)}")
  return arrays, dict(folded=folded_seen.pop(), bn_eps=eps_seen.pop(),
                      input_scale=normalization[0], input_shift=normalization[1])


def _peek_conv2_stride(g, bn_node):
  """Stride of the second conv of the block whose first BN is bn_node (no arrays read)."""
  t = bn_node.output[0]
  for op in ("Conv", "PRelu", "Conv"):
    nxt = [n for n in g.consumers.get(g.name(t), []) if n.op_type in (op, "BatchNormalization")]
    if not nxt:
      raise g.error(bn_node, "is not followed by the IBasicBlock conv/BN/PReLU/conv chain")
    node = nxt[0]
    if node.op_type == "BatchNormalization":   # the BN after a conv in unfolded graphs
      node = g.next(node.output[0], {op}, "block")
    t = node.output[0]
  return int(g.attrs(node).get("strides", [1, 1])[0])


# ---------------------------------------------------------------------------------------------


def load_arrays(src: str):
  """(insightface-named float32 arrays, IResNetConfig) of an .onnx or .pth file."""
  if not os.path.isfile(src):
    raise FileNotFoundError(f"{src}: no such file (expected an ArcFace .onnx or .pth file)")
  if src.endswith(".onnx"):
    arrays, extra = _read_onnx(src)
  else:
    from conversion.torch_io import read_state_dict
    arrays = read_state_dict(src, alternative=", or convert the model's .onnx file instead")
    # A BN step counter, not a weight.
    arrays = {k: v for k, v in arrays.items() if not k.endswith("num_batches_tracked")}
    extra = dict(folded="conv1.bias" in arrays)
  return arrays, _config_from_arrays(arrays, src, **extra)


def target_shapes(module) -> dict:
  import jax
  import jax.numpy as jnp
  s = module.config.input_size
  return mapping.abstract_shapes(module.init, jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32))


def convert_arrays(arrays: dict, config, src: str = "checkpoint") -> dict:
  """Flat {'params/...': array} of IResNet(config) from insightface-named arrays (strict)."""
  from sem_repa_jax.models.encoders.arcface import IResNet
  return mapping.convert(DictSource(_rename_scanned(arrays)), RULES, target_shapes(IResNet(config)),
                         np.float32, src_name=src)


def _read(src: str, variant=None):
  if variant is not None:
    raise ValueError(f"--variant {variant!r}: arcface reads one .onnx or .pth file, which has none")
  arrays, config = load_arrays(src)
  return DictSource(_rename_scanned(arrays)), config


def _module_kwargs(config, dtype: str) -> dict:
  from sem_repa_jax.models.encoders.arcface import config_to_json
  return dict(config=config_to_json(config), param_dtype=dtype)


def convert(src: str, dst: str, dtype: str = "float32", variant=None) -> str:
  # Running statistics stay float32: BN variances lose too much in bfloat16.
  return driver.convert(src, dst, dtype, kind=KIND, read=_read, rules=lambda config: RULES,
                        target_shapes=target_shapes, module_kwargs=_module_kwargs,
                        keep_float32=("batch_stats/",), variant=variant)
