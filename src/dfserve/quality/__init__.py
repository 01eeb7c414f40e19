"""Does a live deployment give the right answers: `dfserve verify` (the reference model's verdict, within the
build's fidelity bar), `dfserve eval` (a model card's metrics on a labelled folder) and `dfserve classify`."""
