"""Run-time overrides of a built repository (instance counts, queue delay) in a private view of it: `dfserve serve`
adapts a repository to the host without rewriting what the build wrote. The one other writer of `config.pbtxt`
beside `dfserve.repository.configs`, through the same Triton protobuf."""

from __future__ import annotations

from pathlib import Path

from dfserve.errors import ServerError
from dfserve.repository.staging import snapshot


def overlay_repository(
    repository: str | Path,
    destination: str | Path,
    *,
    instance_counts: dict[str, int] | None = None,
    max_queue_delay_us: int | None = None,
) -> list[str]:
    """Build in `destination` a view of `repository` whose configs carry run-time overrides, without
    touching the repository itself.

    Triton 2.51 overrides a model's config only through the model-control API, which the safe
    ``--model-control-mode=none`` turns off; so the overrides go into a private copy instead: every entry
    is a snapshot of the original (hard links where the filesystem allows, else copies:
    `dfserve.repository.staging.snapshot`, so that a later build into `repository` does not change what is
    served) except each model's ``config.pbtxt``, rewritten through Triton's own protobuf where an override
    applies. `instance_counts` maps a model name to the count for all its instance groups;
    `max_queue_delay_us` applies to every model with dynamic batching. Returns one line per change made.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    src = Path(repository).expanduser().resolve()
    dst = Path(destination)
    counts = dict(instance_counts or {})
    models = {p.name for p in src.iterdir() if p.is_dir() and (p / "config.pbtxt").is_file()}
    unknown = sorted(set(counts) - models)
    if unknown:
        raise ServerError(f"cannot override {', '.join(unknown)}: no such model in {src} (it has {sorted(models)})")
    for name, count in counts.items():
        if count < 1:
            raise ServerError(f"instance count for {name} must be at least 1, got {count}")
    if max_queue_delay_us is not None and max_queue_delay_us < 0:
        raise ServerError(f"max queue delay must be >= 0 microseconds, got {max_queue_delay_us}")
    changes: list[str] = []
    snapshot(src, dst)
    for entry in sorted(src.iterdir()):
        if entry.name not in models or entry.name.startswith("."):
            continue
        config_path = dst / entry.name / "config.pbtxt"
        before = len(changes)
        try:
            config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
        except text_format.ParseError as exc:
            raise ServerError(f"{config_path} is not a valid Triton model config: {exc}") from exc
        if entry.name in counts:
            count = counts[entry.name]
            if not config.instance_group:
                config.instance_group.add()
            for group in config.instance_group:
                group.count = count
            changes.append(f"{entry.name}: instance_group count {count}")
        if max_queue_delay_us is not None and config.HasField("dynamic_batching"):
            config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
            changes.append(f"{entry.name}: max_queue_delay_microseconds {max_queue_delay_us}")
        if len(changes) > before:
            config_path.unlink()  # a hard link to the original: replaced, never written through
            config_path.write_text(text_format.MessageToString(config))
    return changes
