"""Reading tritonserver's log for a person: the lines that explain why it stopped, without the noise."""

from __future__ import annotations

import re
import signal

# Lines of a Triton log that explain a failure: glog error lines (E1124 21:40:00.123 ...), the final
# "error: creating server" line, model load failures and Python tracebacks from the stub.
_LOG_PREFIX = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+")


_ERROR_LINE = re.compile(
    r"^E\d{4} |^F\d{4} |error:|failed to load|UNAVAILABLE|Traceback|Error|exception|Address already in use",
    re.IGNORECASE,
)


# Lines every CPU-only start prints; they never explain a failure.
_NOISE = re.compile(r"CudaDriverHelper has not been initialized|Failed to initialize NVML|Unable to get number of GPUs")


def explain_log(text: str, *, max_lines: int = 30, max_chars: int = 4000) -> str:
    """The lines of a Triton log that say why it failed: error lines with their continuation lines (a
    Python traceback from a model spans many), without the rest of the log. Empty when nothing matches."""
    lines = text.splitlines()
    picked: list[str] = []
    in_error = False
    for line in lines:
        if _NOISE.search(line):
            in_error = False
            continue
        if _LOG_PREFIX.match(line):
            in_error = line.startswith(("E", "F"))
            if in_error:
                picked.append(line.replace("\\n", "\n    "))  # Triton quotes multi-line messages
            continue
        if in_error or _ERROR_LINE.search(line):
            stripped = line.rstrip()
            if stripped and not set(stripped) <= set("+-| "):  # skip the model table's rules
                picked.append(stripped)
    picked = list(dict.fromkeys(picked))  # Triton repeats a model's error in its status table
    if len(picked) > max_lines:
        picked = [*picked[: max_lines // 2], "...", *picked[-max_lines // 2 :]]
    out = "\n".join(picked)
    return out if len(out) <= max_chars else out[: max_chars // 2] + "\n...\n" + out[-max_chars // 2 :]


def _tail(text: str, n: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


_SIGNAL_MEANING = {
    "SIGSEGV": "a crash inside Triton (e.g. a request it could not parse)",
    "SIGABRT": "a crash inside Triton (an assertion or an uncaught exception)",
    "SIGBUS": "a crash inside Triton (a bad memory access)",
    "SIGKILL": "killed from outside: the kernel's out-of-memory killer or a person",
}


def exit_headline(pid: int | None, code: int) -> str:
    """One line naming how a process ended: its signal's name (SIGSEGV, not -11) and what that usually means."""
    if code >= 0:
        return f"tritonserver (pid {pid}) exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    meaning = _SIGNAL_MEANING.get(name)
    return f"tritonserver (pid {pid}) died of {name}" + (f": {meaning}" if meaning else "")
