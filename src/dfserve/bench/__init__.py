"""`dfserve bench`: the raw engine, the served engine, the ensemble and preprocessing, measured side by side.

run.py          the sections and their orchestration (`run_bench`), summaries and goals
variants.py     what is measured (pipeline, raw ONNX Runtime, served vit and detector) and how (one closed loop)
preprocess.py   dfserve's resize modes against the checkpoint's Transformers processor
report.py       JSON, markdown and PNG from one run
tune.py, int8.py, gpu.py, overhead.py   the focused measurements behind the defaults and the docs
"""
