"""What runs the `vit` model at serving time: the PyTorch scoring module (`torch_module`), the TensorRT runtime
(`tensorrt`), the record beside every plan and the check that this host can run it (`records`), and the GPUs of
the host (`gpus`). The build (`dfserve.export`) produces engines; this package is what serving needs of them."""
