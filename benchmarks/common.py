"""Shared pieces of the benchmarks: the machine, the models compared, timing, tables and JSON.

Every benchmark measures its contenders side by side in one run, interleaved (each round runs every
contender once, in a rotated order, so that drifting machine load hits all of them alike) and
reports the median over rounds. Each script prints a Markdown table and writes
benchmarks/results/<name>.json with the raw times, the settings and the machine.

"Our model" is checkpoints/gaze-sst2 when it exists and `--model` does not name another folder;
otherwise a model of the shipped size (training/configs/sst2.yaml: 4 layers, hidden 256, 4 heads,
FFN 1024, vocabulary 8192, 128 positions) with random weights and a WordPiece tokenizer trained on
the SST-2 training sentences, built once under benchmarks/.cache/. Speed does not depend on the
weights; prediction agreement (bf16, int8) does, so the JSON says which model was used.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"
SHARED_DATA = ROOT.parent / "shared" / "data"
SHIPPED = ROOT / "checkpoints" / "gaze-sst2"

# The shipped size (training/configs/sst2.yaml).
SIZE = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
LABELS = {0: "negative", 1: "positive"}


# -------------------------------------------------------------------------------------------------
# The machine
# -------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("amx", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")))


def other_jobs() -> list[str]:
    """Other CPU-heavy processes running now (training, test runs): the numbers are noisier with them."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    except OSError:
        return []
    mine = {os.getpid(), os.getppid()}
    busy = []
    for line in out.splitlines()[1:]:
        pid, pcpu, args = line.strip().split(None, 2)
        if int(pid) not in mine and float(pcpu) >= 20.0:
            busy.append(f"{pcpu}% {args[:100]}")
    return busy


def machine() -> dict[str, Any]:
    import tokenizers
    import torch
    import transformers

    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "other_busy_processes": other_jobs(),
    }


# -------------------------------------------------------------------------------------------------
# Data
# -------------------------------------------------------------------------------------------------


def sst2(split: str = "dev") -> tuple[list[str], list[int]]:
    path = SHARED_DATA / "sst2" / f"{split}.tsv"
    if not path.exists():
        sys.exit(f"benchmark data {path} is missing (the SST-2 files live in ../shared/data/sst2)")
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


def imdb(n: int) -> list[str]:
    path = SHARED_DATA / "imdb" / "train.jsonl"
    if not path.exists():
        sys.exit(f"benchmark data {path} is missing")
    texts = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) >= n:
                break
    return texts


# -------------------------------------------------------------------------------------------------
# Models
# -------------------------------------------------------------------------------------------------


def tokenizer_dir() -> Path:
    """A WordPiece tokenizer (vocabulary 8192) trained on the SST-2 training sentences, cached."""
    folder = CACHE / "tokenizer-sst2-8192"
    if not (folder / "tokenizer.json").exists():
        from model.tokenization import train_tokenizer

        texts, _ = sst2("train")
        staging = folder.with_name(folder.name + ".tmp")
        train_tokenizer(texts, vocab_size=8192, model_max_length=512, show_progress=False).save_pretrained(staging)
        staging.replace(folder)
    return folder


def random_gaze_dir(max_positions: int = 128) -> Path:
    """A Gaze classifier of the shipped size with random weights (seed 0), saved with its tokenizer."""
    folder = CACHE / f"gaze-random-p{max_positions}"
    if (folder / "model.safetensors").exists():
        return folder
    import torch
    from transformers import AutoTokenizer

    from model import GazeConfig, GazeForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    tokenizer.model_max_length = max_positions
    config = GazeConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_positions,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
        **SIZE,
    )
    torch.manual_seed(0)
    staging = folder.with_name(folder.name + ".tmp")
    GazeForSequenceClassification(config).save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.replace(folder)
    return folder


def our_model(spec: str | None = None, max_positions: int = 128) -> tuple[Path, str]:
    """(folder, description): `spec`, else the shipped checkpoint if present, else random weights."""
    if spec:
        return Path(spec), f"{spec} (given)"
    if (SHIPPED / "model.safetensors").exists() and max_positions == 128:
        import hashlib

        digest = hashlib.sha256((SHIPPED / "model.safetensors").read_bytes()).hexdigest()[:12]
        return SHIPPED, f"checkpoints/gaze-sst2 (the shipped, trained model; model.safetensors sha256 {digest}…)"
    return random_gaze_dir(max_positions), (
        f"random weights at the shipped size ({max_positions} positions); speed does not depend on weights"
    )


def bert_config(gaze_config, attn_implementation: str = "sdpa"):
    """A BertConfig of the same size as a Gaze config: layers, hidden, heads, FFN, vocabulary, positions."""
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=gaze_config.vocab_size,
        hidden_size=gaze_config.hidden_size,
        num_hidden_layers=gaze_config.num_hidden_layers,
        num_attention_heads=gaze_config.num_attention_heads,
        intermediate_size=gaze_config.intermediate_size,
        max_position_embeddings=gaze_config.max_position_embeddings,
        pad_token_id=gaze_config.pad_token_id,
        id2label=dict(gaze_config.id2label),
        label2id=dict(gaze_config.label2id),
    )
    config._attn_implementation = attn_implementation
    return config


def bert_peer_dir(gaze_dir: Path) -> Path:
    """A BertForSequenceClassification of the same size as the Gaze model in `gaze_dir` (random
    weights, seed 0), saved with the same tokenizer: the HF pipeline and the naive server load it."""
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

    import model as _gaze  # noqa: F401  (registers the gaze type)

    gaze_config = AutoConfig.from_pretrained(gaze_dir)
    sizes = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
    key = "-".join(str(getattr(gaze_config, name)) for name in (*sizes, "max_position_embeddings"))
    folder = CACHE / f"bert-peer-{key}"
    if (folder / "model.safetensors").exists():
        return folder
    import torch

    torch.manual_seed(0)
    staging = folder.with_name(folder.name + ".tmp")
    BertForSequenceClassification(bert_config(gaze_config)).save_pretrained(staging)
    AutoTokenizer.from_pretrained(gaze_dir).save_pretrained(staging)
    staging.replace(folder)
    return folder


def parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


# -------------------------------------------------------------------------------------------------
# Timing
# -------------------------------------------------------------------------------------------------


def interleaved(
    contenders: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1, progress: bool = True
) -> dict[str, list[float]]:
    """Seconds per call of each contender: `warmup` untimed rounds, then `rounds` timed ones; each
    round runs every contender once, the order rotated by one each round."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            tic = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - tic)
        if progress:
            print(f"  round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


# -------------------------------------------------------------------------------------------------
# Output
# -------------------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def goal(name: str, value: float, target: float, unit: str = "×") -> dict[str, Any]:
    met = value >= target
    return {"goal": name, "value": round(value, 3), "target": target, "met": met, "text": f"{value:.2f}{unit}"}


def goals_table(goals: list[dict[str, Any]]) -> str:
    rows = [[g["goal"], f"≥ {g['target']}", g["text"], "met" if g["met"] else "**not met**"] for g in goals]
    return table(["goal", "target", "measured", "status"], rows)


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def command_line() -> str:
    """How this benchmark was started, as `python -m benchmarks.<name> args` from the repository root."""
    script = Path(sys.argv[0]).resolve()
    module = ".".join(script.relative_to(ROOT).with_suffix("").parts) if script.is_relative_to(ROOT) else script.stem
    return " ".join(["python", "-m", module, *sys.argv[1:]])


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the script (numbers meaningless)")
    parser.add_argument("--model", help="a Gaze folder (default: checkpoints/gaze-sst2, else random weights)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write benchmarks/results/*.json")
    return parser


def report(name: str, args: argparse.Namespace, data: dict[str, Any], markdown: str) -> None:
    """Print the Markdown and write the JSON (unless --no-write or --quick)."""
    data = {"benchmark": name, "command": command_line(), "machine": machine(), **data, "markdown": markdown}
    print(markdown)
    if args.no_write or args.quick:
        print(f"\n(--quick/--no-write: {RESULTS / (name + '.json')} not written)")
        return
    print(f"\nwrote {write_results(name, data).relative_to(ROOT)}")
