"""How models are run (device, precision, memory format, compilation) and device facts."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# --------------------------------------------------------------------------- settings


@dataclass
class RunSettings:
    """How models are run: device, precision, memory format, compilation."""

    device: str = "cpu"
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    compile_mode: str | None = None  # torch.compile mode; default: "reduce-overhead" with cuda_graphs
    freeze: bool = False  # inductor freezing: weights become constants (BN folded into convs, prepacked)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        dev = torch.device(self.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device cuda requested but CUDA is not available (torch.cuda.is_available() is False)")
        if dev.type == "cpu" and self.dtype == "fp16":
            raise ValueError("fp16 is not supported on the CPU (no fast fp16 kernels, autocast rejects it); "
                             "use --dtype bf16 (autocast) or fp32")
        if self.cuda_graphs and dev.type != "cuda":
            raise ValueError("CUDA graphs need --device cuda")
        if self.freeze and not self.compile:
            raise ValueError("--freeze is a torch.compile option: add --compile")
        if self.freeze and self.compile_mode not in (None, "default"):
            raise ValueError(f"--freeze cannot be combined with --compile-mode {self.compile_mode} "
                             "(torch.compile takes a mode or inductor options, not both)")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def autocast(self) -> AbstractContextManager:
        """Autocast context for ``dtype`` (none for fp32)."""
        if self.dtype == "fp32":
            return nullcontext()
        return torch.autocast(self.torch_device.type, dtype=DTYPES[self.dtype])

    def describe(self) -> str:
        flags = [self.dtype if self.dtype == "fp32" else f"{self.dtype} autocast"]
        flags += [name for name, on in (("channels-last", self.channels_last), ("compiled", self.compile),
                                        ("frozen weights", self.freeze), ("CUDA graphs", self.cuda_graphs)) if on]
        return ", ".join(flags)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """Human-readable name of the device (GPU model, or CPU model and thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"
