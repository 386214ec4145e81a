"""Small ONNX graphs with the real DWPose files' input/output names and shapes (yolox_l.onnx:
'images' (1,3,640,640) -> (1,8400,85); dw-ll_ucoco_384.onnx: 'input' (1,3,384,288) -> 'simcc_x'
(1,133,576), 'simcc_y' (1,133,768)) whose outputs the tests set."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32 = TensorProto.FLOAT


def _save(path, nodes, inp, outs, inits):
  graph = helper.make_graph(nodes, "stub", [helper.make_tensor_value_info(*inp)],
                            [helper.make_tensor_value_info(*o) for o in outs], inits)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  model.ir_version = 8
  onnx.checker.check_model(model)
  onnx.save(model, str(path))
  return str(path)


def constant_model(path, input_name, input_shape, outputs: dict):
  """outputs = {name: constant array}; each output = constant + 0 * mean(input)."""
  nodes = [helper.make_node("ReduceMean", [input_name], ["m"], keepdims=0),
           helper.make_node("Mul", ["m", "zero"], ["z"])]
  inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
  for name, value in outputs.items():
    inits.append(numpy_helper.from_array(value.astype(np.float32), f"c_{name}"))
    nodes.append(helper.make_node("Add", ["z", f"c_{name}"], [name]))
  return _save(path, nodes, (input_name, F32, input_shape),
               [(n, F32, list(v.shape)) for n, v in outputs.items()], inits)


def spot_model(path):
  """simcc_x[k, 2j + {0,1}] = max over channels and rows of crop column j (simcc_y likewise over
  columns): every keypoint lands on the brightest crop pixel."""
  nodes, inits = [], [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
                      [("cols", [1, 1, 288, 1]), ("rows", [1, 1, 384, 1]), ("sx", [1, 1, 576]),
                       ("sy", [1, 1, 768]), ("ex", [1, 133, 576]), ("ey", [1, 133, 768])]]
  for axis, grid, flat, full, out in [(2, "cols", "sx", "ex", "simcc_x"),
                                      (3, "rows", "sy", "ey", "simcc_y")]:
    nodes += [helper.make_node("ReduceMax", ["input"], [f"r{axis}"], axes=[1, axis], keepdims=1),
              helper.make_node("Reshape", [f"r{axis}", grid], [f"g{axis}"]),
              helper.make_node("Concat", [f"g{axis}", f"g{axis}"], [f"c{axis}"], axis=3),
              helper.make_node("Reshape", [f"c{axis}", flat], [f"f{axis}"]),
              helper.make_node("Expand", [f"f{axis}", full], [out])]
  return _save(path, nodes, ("input", F32, [1, 3, 384, 288]),
               [("simcc_x", F32, [1, 133, 576]), ("simcc_y", F32, [1, 133, 768])], inits)


def yolox_cell(out, stride, row, col, raw):
  """Sets the prediction of one grid cell (strides 8, 16, 32 in order, row-major)."""
  offset = {8: 0, 16: 80 * 80, 32: 80 * 80 + 40 * 40}[stride]
  out[0, offset + row * (640 // stride) + col, :len(raw)] = raw


def yolox_output():
  out = np.zeros((1, 8400, 85), np.float32)
  person = lambda obj, p=1.0: [obj, p]  # noqa: E731
  # A: stride 8, center ((20 + .5) * 8, (10 + .25) * 8) = (164, 82), size 32 x 64, score 0.9
  yolox_cell(out, 8, 10, 20, [0.5, 0.25, np.log(4), np.log(8)] + person(0.9))
  # B: the same box from stride 16 at 0.8: suppressed by A
  yolox_cell(out, 16, 5, 10, [0.25, 0.125, np.log(2), np.log(4)] + person(0.8))
  # C: stride 32, center (496, 176), 32 x 32, score 0.5: kept
  yolox_cell(out, 32, 5, 15, [0.5, 0.5, 0.0, 0.0] + person(0.5))
  # D: 0.4 * 0.5 = 0.2 < 0.3; E: another class (person score 0.9 * 0.05)
  yolox_cell(out, 32, 15, 5, [0.5, 0.5, 0.0, 0.0] + person(0.4, 0.5))
  yolox_cell(out, 32, 1, 1, [0.5, 0.5, 0.0, 0.0, 0.9, 0.05, 0.95])
  return out


def simcc_output():
  """Keypoint k peaks at x bin 2k + 10 (value 0.8) and y bin 3k + 5 (0.6 + k / 1000); the right
  shoulder (COCO 6) and the left ear (3) have no positive value (missing)."""
  k = np.arange(133)
  sx, sy = np.full((1, 133, 576), -0.5, np.float32), np.full((1, 133, 768), -0.5, np.float32)
  sx[0, k, 2 * k + 10] = 0.8
  sy[0, k, 3 * k + 5] = 0.6 + k / 1000
  sx[0, [3, 6]] = sy[0, [3, 6]] = -0.2
  return sx, sy


def stub_files(d):
  """yolox_l.onnx (boxes A and C of yolox_output), dw-ll_ucoco_384.onnx (simcc_output), and
  spot.onnx / empty.onnx (no person) in folder d."""
  sx, sy = simcc_output()
  return dict(
      det=constant_model(d / "yolox_l.onnx", "images", [1, 3, 640, 640], {"output": yolox_output()}),
      pose=constant_model(d / "dw-ll_ucoco_384.onnx", "input", [1, 3, 384, 288],
                          {"simcc_x": sx, "simcc_y": sy}),
      spot=spot_model(d / "spot.onnx"),
      none=constant_model(d / "empty.onnx", "images", [1, 3, 640, 640],
                          {"output": np.zeros((1, 8400, 85), np.float32)}))
