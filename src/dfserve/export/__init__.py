"""`dfserve build`: checkpoint → ONNX → (TensorRT) → Triton repository, with the parity proof.

checkpoint.py   resolving a hub id or folder, checking it, labels and preprocessing from its files
onnx_graph.py   optimum's export composed with dfserve's uint8 input and scoring graphs
parity.py       the reference Transformers pipeline against the built graph
tensorrt.py     the FP16 engine on a GPU host (TensorRT cannot run on the project's CPU machines)
pipeline.py     the stages in order, the report; cli.py the command
"""
