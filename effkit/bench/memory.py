"""Peak memory of a saved model, measured in a fresh subprocess (``python -m effkit.bench``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from effkit.bench.config import WHERE
from effkit.bench.environment import resolve_device, synchronize
from effkit.bench.inputs import low_id_for, make_inputs
from effkit.errors import EffkitError, ModelError

logger = logging.getLogger(__name__)


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _child_env() -> dict[str, str]:
    """The environment for the child: this package importable even when not installed."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    current = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root if not current else os.pathsep.join([root, current])
    return env


def peak_memory_mb(
    model_dir: str | Path, *, batch_size: int, seq_len: int, device: str = "cpu"
) -> float:
    """Peak memory (MiB) of loading the saved model and running it, measured in a subprocess.

    On CPU this is the child's maximum resident set size (the interpreter and torch included);
    on CUDA it is ``torch.cuda.max_memory_allocated``.
    """
    path = Path(model_dir)
    if not path.is_dir():
        raise ModelError(
            "model folder not found, cannot measure its peak memory",
            where=str(path),
            hint="memory is measured from a saved model folder",
        )
    command = [
        sys.executable,
        "-m",
        "effkit.bench",
        "memory",
        str(path),
        "--batch-size",
        str(batch_size),
        "--seq-len",
        str(seq_len),
        "--device",
        device,
    ]
    logger.debug("measuring peak memory: %s", " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True, env=_child_env(), check=False)
    if done.returncode != 0:
        raise ModelError(
            f"peak-memory subprocess failed with exit code {done.returncode}:\n"
            f"{_tail(done.stderr) or _tail(done.stdout) or '(no output)'}",
            where=str(path),
        )
    for line in reversed(done.stdout.strip().splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "peak_memory_mb" in record:
            return float(record["peak_memory_mb"])
    raise ModelError(
        "peak-memory subprocess printed no {'peak_memory_mb': ...} line; its output ends:\n"
        f"{_tail(done.stdout) or '(no output)'}\n{_tail(done.stderr)}",
        where=str(path),
    )


def _measure_memory(model_dir: str, batch_size: int, seq_len: int, device_spec: str) -> float:
    """Load the model, run two forward passes and return the peak memory in MiB (child side)."""
    from effkit.models import load

    device = resolve_device(device_spec)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = load(model_dir)
    model.to(device)
    model.eval()
    vocab_size = int(model.vocab_size)
    inputs = make_inputs(
        batch_size,
        seq_len,
        vocab_size,
        device=device,
        type_vocab_size=int(getattr(model, "type_vocab_size", 0) or 0),
        low_id=low_id_for(vocab_size),
    )
    with torch.inference_mode():
        for _ in range(2):
            model(**inputs)
    synchronize(device)
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device)) / 2**20
    try:
        import resource
    except ImportError as exc:  # pragma: no cover - not on Linux or macOS
        raise EffkitError("peak memory on CPU needs the resource module", where=WHERE) from exc
    rss = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    # Linux reports KiB, macOS bytes.
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: ``python -m effkit.bench memory MODEL_DIR ...`` prints one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m effkit.bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    memory = commands.add_parser("memory", help="peak memory of one saved model, as JSON")
    memory.add_argument("model_dir", help="a saved model folder")
    memory.add_argument("--batch-size", type=int, default=128)
    memory.add_argument("--seq-len", type=int, default=128)
    memory.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        peak = _measure_memory(args.model_dir, args.batch_size, args.seq_len, args.device)
    except EffkitError as exc:
        sys.stderr.write(f"{exc.kind}: {exc}\n")
        return 2
    sys.stdout.write(json.dumps({"peak_memory_mb": round(peak, 3)}) + "\n")
    sys.stdout.flush()
    return 0
