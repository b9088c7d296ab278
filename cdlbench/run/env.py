"""Environment facts carried by every record (env_* columns)."""
from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy
import torch


@lru_cache(maxsize=None)
def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


@lru_cache(maxsize=None)
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo's "model name" on Linux, else platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def isa_path(device: torch.device) -> str:
    """The instruction-set path of the float kernels: ATen's CPU capability (default, avx2,
    avx512, ...) on a CPU, the compute capability on a GPU. Float results are bit-identical only
    between runs that share this path, the CPU model and the thread count (docs/reproducibility.md)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda sm_{major}{minor}"
    try:
        return f"aten {torch.backends.cpu.get_cpu_capability().lower()}"
    except Exception:          # torch < 2.1 has no get_cpu_capability
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict:
    from .. import __version__

    return {"env_cdlbench": __version__, "env_git_sha": git_sha(), "env_torch": torch.__version__,
            "env_numpy": numpy.__version__, "env_python": platform.python_version(),
            "env_platform": platform.platform(), "env_device": device_name(device),
            "env_cpu_model": cpu_model(), "env_isa": isa_path(device)}


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        from ..errors import UserError

        build = ("a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}, "
                 "but no CUDA device is visible")
        raise UserError(f"--device cuda (or the suite's device: cuda): the installed torch {torch.__version__} is "
                        f"{build}; use --device auto (CUDA when present, else the CPU) or --device cpu")
    return torch.device(choice)
