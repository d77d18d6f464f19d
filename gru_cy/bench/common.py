"""What the benchmark's engines share: the training step's hyper-parameters,
the SPEC-named weight blocks, and the one-node ONNX GRU model that ONNX
Runtime and OpenVINO run."""
import numpy as np

LEARNING_RATE = 1e-3
MOMENTUM = 0.9
DECAY = 1e-4


def _stack(params, subs, what):
    return np.concatenate([params[f"{s}.{what}"] for s in subs])


def gru_onnx_model(params, lbr, stream, T="T", B="B"):
    """The one-node ONNX GRU model of ``params`` that ONNX Runtime and
    OpenVINO run: inputs X (T, B, I) and initial_h (1, B, H); outputs Y
    (T, 1, B, H) (not when ``stream``) and Y_h.  ``T``, ``B``: symbolic names
    or fixed sizes."""
    from onnx import TensorProto, helper, numpy_helper

    H, I = params["uz.weights"].shape
    W = _stack(params, ("uz", "ur", "uh"), "weights")[None]
    R = _stack(params, ("wz", "wr", "wh"), "weights")[None]
    Bias = np.concatenate([_stack(params, ("uz", "ur", "uh"), "biases"),
                           _stack(params, ("wz", "wr", "wh"), "biases")])[None]
    f = TensorProto.FLOAT
    outputs = ["", "Y_h"] if stream else ["Y", "Y_h"]
    node = helper.make_node("GRU", ["X", "W", "R", "B", "", "initial_h"], outputs,
                            hidden_size=H, linear_before_reset=lbr)
    graph_out = [helper.make_tensor_value_info("Y_h", f, [1, B, H])]
    if not stream:
        graph_out.insert(0, helper.make_tensor_value_info("Y", f, [T, 1, B, H]))
    graph = helper.make_graph(
        [node], "gru",
        [helper.make_tensor_value_info("X", f, [T, B, I]),
         helper.make_tensor_value_info("initial_h", f, [1, B, H])],
        graph_out,
        initializer=[numpy_helper.from_array(W.astype(np.float32), "W"),
                     numpy_helper.from_array(R.astype(np.float32), "R"),
                     numpy_helper.from_array(Bias.astype(np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model
