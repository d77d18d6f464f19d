"""ONNX export and import: :func:`export` and :func:`load`.

``gru_cy.onnx.export(model, path)`` writes a ``GRU``, ``StackedGRU`` or
``Network`` as an ONNX model that ONNX Runtime and OpenVINO run;
``gru_cy.onnx.load(path)`` builds a gru_cy model from an ONNX model made of
GRU nodes and connected layers.  The ``onnx`` package is an optional extra
(``pip install "gru_cy[onnx]"``); it is imported when one of these functions is
called, never by ``import gru_cy``.

The exported graph
------------------
Inputs: ``x`` ``(T, B, inputs)`` float32 (``(B, T, inputs)`` for a
``batch_first`` stack); with ``sequence_lens=True`` also ``sequence_lens``
``(B,)`` int32 (every GRU node reads it: ``y`` is 0 past each sequence's
length, as ``forward(..., lengths=)``); with ``initial_h=True`` the initial
states: ``initial_h`` ``(num_layers * D, B, H)`` for a GRU or a stack (torch's
order: layer, then direction), ``initial_h.{i}`` for recurrent layer ``i`` of
a network.  ``T`` and ``B`` are symbolic.

Outputs: ``y`` (the model's output, as ``forward`` returns it) and the final
states, ``h_n`` ``(num_layers * D, B, H)`` (``h_n.{i}`` per recurrent layer of a
network).

One ONNX ``GRU`` node per layer, both directions of a bidirectional layer in
one ``direction="bidirectional"`` node (as torch's exporter writes them;
OpenVINO computes a forward and a reverse node reading one input wrongly):
``linear_before_reset`` is 0 for the "darknet" variant and 1 for
"reset_after"; a logistic candidate is ``activations=["Sigmoid", "Sigmoid"]``
per direction.  Batch normalisation in inference is affine, so it is folded
into the node's weights and biases (``k = scales / (sqrt(rolling_variance) +
1e-6)``, ``W' = k W``, ``b' = biases - k rolling_mean``).  A connected layer is
``MatMul`` + ``Add`` and its activation (Darknet's ``leaky`` is
``LeakyRelu(0.1)``, ``relie`` ``LeakyRelu(0.01)``, ``selu`` ``Selu`` with
Darknet's constants, ``loggy`` ``Tanh(x / 2)``, and ``ramp``, ``hardtan``,
``lhtan`` and ``plse`` compositions of ``Relu``/``Clip``/``Mul``/``Add``);
``[softmax]`` is ``Softmax`` over the last axis (``Reshape`` around it for
``groups``, ``Div`` before it for ``temperature``); ``[cost]`` and dropout
are the identity in inference and write nothing.  Parameters are written in
float32 whatever the model's dtype: ONNX Runtime's GRU has no double kernel.

OpenVINO 2026.4 (CPU) computes GRU nodes with ``sequence_lens`` wrongly when
the graph's time and batch dimensions are symbolic (``Y`` past the lengths
and ``Y_h``, for one-direction and bidirectional nodes alike, tanh
candidate); with fixed dimensions it computes them right (measured within
2.4e-7 of gru_cy).  For OpenVINO with ``sequence_lens``, export with
``static_shape=(T, B)`` (or call ``model.reshape`` in OpenVINO before
compiling).  ONNX Runtime is right either way.

Import
------
:func:`load` reads GRU nodes (``forward``, ``reverse`` or ``bidirectional``;
``layout`` 0 or 1; ``sequence_lens`` and ``initial_h`` from graph inputs;
both ``linear_before_reset`` values; ``Sigmoid`` gates with a ``Tanh`` or
``Sigmoid`` candidate), ``MatMul``/``Gemm`` + ``Add`` with ``Sigmoid``,
``Tanh``, ``Relu``, ``LeakyRelu`` (alpha 0.1 or 0.01), ``Elu`` (alpha 1),
``Selu`` (Darknet's constants), ``Softmax`` over the last axis, and the
``Transpose``/``Squeeze``/``Reshape``/``Concat``/``Slice`` glue around GRU
nodes that this exporter and torch's write.  Any other operator or attribute
(``clip``, other activations, a non-zero constant ``initial_h``) is a
``ValueError`` naming the node.  A chain of GRU nodes becomes a ``GRU`` or a
``StackedGRU``; with other layers a ``Network``.  ``lengths=`` of the model's
``forward`` takes what the graph took as ``sequence_lens``.  Initial states:
a GRU node's ``initial_h`` must be zeros, a graph input, or rows
``k*D:(k+1)*D`` (a ``Slice`` along axis 0) of one for layer ``k`` (torch's
order, as this exporter writes them); anything the graph computes (another
node's ``Y_h``, arithmetic, other slices) is a ``ValueError``, since a gru_cy
model takes its initial state at call time: a ``StackedGRU``'s ``h0`` is the
graph's ``initial_h`` ``(L*D, B, H)``, a ``GRU``'s is ``initial_h[0]``
``(B, H)``, and a ``Network``'s recurrent layers start from their carried
``state`` (set ``net.layers[i].state`` to the graph's ``initial_h.{i}``).
Models whose tensors are stored in external data files are read from their
path (the data beside the file).
"""
from gru_cy.onnx._export import DEFAULT_OPSET, export
from gru_cy.onnx._import import load

__all__ = ["export", "load", "DEFAULT_OPSET"]
