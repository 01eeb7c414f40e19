"""`dfserve build`: checkpoint → ONNX → (TensorRT) → Triton repository, with the parity proof.

checkpoint.py   resolving a hub id or folder, checking it, labels and preprocessing from its files
torch_onnx.py   PyTorch's ONNX export of a classifier (Transformers or timm), checked against PyTorch
onnx_graph.py   that export composed with dfserve's uint8 input and scoring graphs
timm_checkpoint.py  timm's hub format and the Community Forensics authors' release (PyTorchModelHubMixin)
precision.py    reduced-precision graphs; fidelity.py how far scores are from the reference
parity.py       the reference pipeline (Transformers, or timm's transform) against the built graph
tensorrt.py     the FP16 engine on a GPU host (TensorRT cannot run on the project's CPU machines)
policy.py       the fidelity bars, CPU serving defaults and presets the build applies
hostspeed.py    a reduced precision timed against FP32 on the build host, and `--precision auto`'s choice
pipeline.py     the stages in order, the report; cli.py the command
"""
