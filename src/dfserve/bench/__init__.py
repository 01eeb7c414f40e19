"""`dfserve bench`: the raw engine, the served engine, the ensemble and preprocessing, measured side by side.

run.py          the sections and their orchestration (`run_bench`)
preprocess.py   dfserve's resize modes against the checkpoint's Transformers processor
serverstats.py  Triton's per-model statistics and the server's CPU and memory
report.py       JSON, markdown and PNG from one run
"""
