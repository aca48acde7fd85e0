"""Where and how fast the model runs: the device, and fp32 or bf16 autocast chosen by measurement.

bf16 changes values slightly (softmax itself stays fp32), so it has to be clearly faster to be chosen, and
only a measurement can tell: machines of one kind differ (benchmarks/README.md, 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# bf16: autocast on CPU, ~1.6x faster where the CPU has bf16 instructions (benchmarks/README.md, 1);
# same labels on SST-2 dev, attention values within ~0.01 of fp32 (softmax itself stays fp32).
PRECISIONS = ("fp32", "bf16")
# "auto": measure both at load and keep the faster. bf16 was 2.1x faster on one 2-core Intel Xeon VM, 1.54x on
# an AMD EPYC VM, 0.64x (slower) on another Intel Xeon VM of the same kind: only a measurement can tell.
PRECISION_CHOICES = ("auto", *PRECISIONS)
# bf16 changes values slightly (see above), so it has to be clearly faster to be chosen; a tie keeps fp32.
BF16_MIN_SPEEDUP = 1.1
DEVICES = ("auto", "cpu", "cuda")  # auto: cuda when torch sees a GPU, else cpu
# The probe of choose_precision: a sentence of SST-2's median length (about 26 tokens).
PROBE_SENTENCE = "a gripping , funny and often moving film , with a story that works and actors who make it matter . "


def resolve_device(device: str) -> torch.device:
    """The torch device for `device`: auto is cuda when torch sees a GPU, else cpu. Asking for cuda without
    one is an error that says so, never a silent fall back to the CPU."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device 'cuda' asked for, but torch {torch.__version__} sees no CUDA GPU "
            "(torch.cuda.is_available() is False); use cpu, or auto to take a GPU only when there is one"
        )
    return torch.device(device)


@dataclass(frozen=True)
class PrecisionChoice:
    """What `Predictor.choose_precision` measured: the median seconds of one probe run per precision."""

    precision: str
    seconds: dict[str, float]
    repeats: int

    def __str__(self) -> str:
        fp32, bf16 = self.seconds["fp32"], self.seconds["bf16"]
        return (
            f"{self.precision} (fp32 {fp32 * 1000:.1f} ms, bf16 {bf16 * 1000:.1f} ms per probe, median of "
            f"{self.repeats}: bf16 {fp32 / bf16:.2f}x fp32's speed; bf16 is kept from {BF16_MIN_SPEEDUP}x)"
        )


def faster_precision(seconds: dict[str, float]) -> str:
    """bf16 if its median time beats fp32's by BF16_MIN_SPEEDUP, else fp32."""
    return "bf16" if seconds["fp32"] >= BF16_MIN_SPEEDUP * seconds["bf16"] else "fp32"
