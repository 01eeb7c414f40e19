"""`dfserve loadtest`: Locust against a running server.

    locustfile.py   the locustfile (plain `locust -f`, docker compose, `dfserve loadtest`)
    users.py        Triton users over HTTP and gRPC (imports Locust: gevent-patches the process)
    shapes.py       the constant / step-ramp load shape (imports Locust)
    ramp.py         the step ramp's state machine, without Locust (the knee is `dfserve.measure.knee`)
    options.py      the locustfile's settings: custom arguments, environment variables, CLI flags
    runner.py       runs Locust headless in a subprocess; report.py turns its CSV into summary.json and a plot

Nothing here imports Locust at package import: only the locustfile and Locust's own processes do.
"""
