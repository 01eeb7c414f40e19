"""The locustfile that plain Locust reads: dfserve's Triton users (HTTP and gRPC) and its load shape.

    locust -f loadtest/locustfile.py --headless -u 8 -r 4 -t 60s --host http://127.0.0.1:8000
    locust -f loadtest/locustfile.py --host grpc://127.0.0.1:8001 --dfserve-mode pixels     # web UI on :8089

It needs `pip install 'dfserve[loadtest]'`. The users, the shape and the `--dfserve-*` arguments live in the
package (`dfserve.loadtest`), so `dfserve loadtest`, docker compose and this file run the same code;
`locust -f loadtest/locustfile.py --help` lists the arguments. See loadtest/README.md.
"""

from dfserve.loadtest.locustfile import DfserveShape, TritonGrpcUser, TritonHttpUser

__all__ = ["DfserveShape", "TritonGrpcUser", "TritonHttpUser"]
