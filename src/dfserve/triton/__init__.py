"""Everything Triton-specific: the repository dfserve writes and the server process it runs.

configs.py      config.pbtxt from Triton's own ModelConfig protobuf
writer.py       the repository layout (models, shims, labels, warm-up, spec)
backends/       the Python-backend models (`preprocess`, and `vit` on ONNX Runtime for the embedded server)
server.py       starting, supervising and stopping a real tritonserver; cli.py is `dfserve serve`
"""
