"""`dfserve serve` against the CPU the repository was built and measured on (`ModelSpec.build_host`).

Two things follow from the serving CPU: whether the served precision's measured speed holds here (an INT8 build
measured with VNNI served on an AVX2 CPU gains nothing: one warning line, `dfserve.engine.cpu.compare_hosts`),
and the CPU defaults that depend on the cores (`dfserve.export.policy.cpu_batching`): where the build wrote the
defaults for its own cores and this host allows a different number, `preprocess` instances and ONNX Runtime's
threads are set for this run from this host's cores, through the same overlay as `--preprocess-instances`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dfserve.engine.cpu import HostCpu, compare_hosts, read_host
from dfserve.export.policy import cpu_batching
from dfserve.spec.model import SPEC_FILENAME, ModelSpec


@dataclass
class HostAdvice:
    """What the serving host changes for this run."""

    warning: str | None = None
    instance_counts: dict[str, int] = field(default_factory=dict)
    """`preprocess` instances for this host, when the build's CPU default for its cores differs from this host's."""
    engine_threads: int | None = None
    """Set when this host's quota allows fewer cores than the machine has and the spec left the count to ONNX
    Runtime (which would then start a thread per core of the machine)."""
    notes: list[str] = field(default_factory=list)


def _build_host_cpu(spec: ModelSpec) -> HostCpu | None:
    b = spec.build_host
    if b is None:
        return None
    return HostCpu(model=b.cpu_model, arch=b.arch, isa=frozenset(b.isa), cores=b.cores, cpus=b.cores)


def advise(spec: ModelSpec, serving: HostCpu) -> HostAdvice:
    """The warning and the run-time CPU defaults for serving `spec` on `serving` (pure: tested directly)."""
    if spec.engine != "onnx" or spec.build_host is None:
        return HostAdvice()
    advice = HostAdvice(warning=compare_hosts(spec.build_host, serving, spec.precision))
    built_for = _build_host_cpu(spec)
    # Only defaults are adapted: a count the build was given explicitly differs from the derived one and is kept.
    if (
        built_for is not None
        and spec.batching.preprocess_instances == cpu_batching(spec.precision, built_for).preprocess_instances
    ):
        here = cpu_batching(spec.precision, serving).preprocess_instances
        if here != spec.batching.preprocess_instances:
            advice.instance_counts[spec.models.preprocess] = here
            advice.notes.append(
                f"{here} preprocess instances for this host's {serving.cores} cores (built for {built_for.cores})"
            )
    if serving.quota_limited and spec.batching.engine_threads == 0:
        advice.engine_threads = serving.cores
        advice.notes.append(
            f"{serving.cores} ONNX Runtime threads: this process may use {serving.cores} of the machine's "
            f"{serving.cpus} CPUs"
        )
    return advice


def advise_repository(repository: Path, serving: HostCpu | None = None) -> HostAdvice:
    """`advise` for a built repository; nothing for a repository without a readable spec (other checks name it)."""
    try:
        spec = ModelSpec.load(repository)
    except (OSError, ValueError):
        return HostAdvice()
    return advise(spec, serving or read_host())


__all__ = ["SPEC_FILENAME", "HostAdvice", "advise", "advise_repository"]
