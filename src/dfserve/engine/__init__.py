"""What runs the `vit` model at serving time: the PyTorch scoring module (`torch_module`), the TensorRT runtime
(`tensorrt`), the record beside every plan and the check that this host can run it (`records`), the GPUs of the
host (`gpus`), and its CPU with the instruction sets that decide a reduced precision's speed (`cpu`). The build
(`dfserve.export`) produces engines; this package is what serving needs of them."""
