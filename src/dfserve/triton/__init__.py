"""`dfserve serve`: a real tritonserver run and supervised on a built repository.

distribution.py  which tritonserver (bundled or installed), its backends, ports
hardening.py     restricted APIs behind a key, key checks and erasure, the request-size bound
state.py         what a launcher leaves for the next one (process group, shared-memory regions)
logs.py          why tritonserver stopped, from its log
args.py          the tritonserver options a user may pass through, and those refused
process.py       `TritonServer`: start, supervise, heal and stop the process
proxy.py         nginx in front of it; cli.py is the command
"""
