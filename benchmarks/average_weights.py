"""Average the weights of fine-tuning runs that share a start (a uniform "model soup") and score it.

    python -m benchmarks.average_weights runs/soup runs/finetune-a runs/finetune-b runs/finetune-c \
        --validation-file ../shared/data/sst2/dev.tsv

Wortsman et al. (2022, "Model soups", ICML) report that averaging fine-tuned models from one
pretrained start can beat the best of them; benchmarks/accuracy.md measures it for our recipe.
The averaged folder is written next to its target and renamed into place (`training.checkpoints.staged`).
"""

import argparse
import json
import shutil
from pathlib import Path

import torch

from model import GazeForSequenceClassification
from training.checkpoints import staged
from training.export import evaluate


def average(runs: list[Path], target: Path) -> None:
    models = [
        GazeForSequenceClassification.from_pretrained(run, dtype=torch.float32, use_safetensors=True) for run in runs
    ]
    configs = {json.dumps(model.config.to_diff_dict(), sort_keys=True) for model in models}
    tokenizers = {(run / "tokenizer.json").read_bytes() for run in runs}
    if len(configs) > 1 or len(tokenizers) > 1:
        raise SystemExit(
            f"{', '.join(map(str, runs))}: the runs differ in config or tokenizer; only the same model can be averaged"
        )
    states = [model.state_dict() for model in models]
    averaged = {name: sum(state[name] for state in states) / len(states) for name in states[0]}
    models[0].load_state_dict(averaged)

    with staged(target) as staging:
        models[0].save_pretrained(staging)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy2(runs[0] / name, staging / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="the folder to write")
    parser.add_argument("runs", type=Path, nargs="+", help="training.train output folders with the same start")
    parser.add_argument("--validation-file", type=Path, required=True)
    args = parser.parse_args()
    average(args.runs, args.target)
    for folder in [*args.runs, args.target]:
        print(f"{folder}: validation accuracy {evaluate(folder, args.validation_file)['eval_accuracy']:.4f}")


if __name__ == "__main__":
    main()
