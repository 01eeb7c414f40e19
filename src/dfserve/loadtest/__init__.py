"""dfserve.loadtest: Locust load tests (`dfserve loadtest`) and the side-by-side benchmark (`dfserve bench`).

    locustfile.py   the locustfile (plain `locust -f`, docker compose, `dfserve loadtest`)
    users.py        Triton users over HTTP and gRPC (imports Locust: gevent-patches the process)
    shapes.py       the constant / step-ramp load shape (imports Locust)
    ramp.py, knee.py  the step ramp's state machine and the knee, without Locust
    options.py      the locustfile's settings: custom arguments, environment variables, CLI flags
    target.py       server address, protocol, and the served ModelSpec read from the server
    payloads.py     image files from a folder or generated at realistic sizes and JPEG qualities
    runner.py       runs Locust headless in a subprocess; report.py turns its CSV into summary.json and a plot
    bench.py        `dfserve bench` (bench_preprocess.py, serverstats.py, bench_report.py)

Nothing here imports Locust at package import: only the locustfile and Locust's own processes do.
"""
