"""The sentence-classification suite of Kim (2014): MR, Subj, CR, MPQA by 10-fold cross-validation, plus SST-2.

    python -m benchmarks.kim2014 [--folds N] [--datasets mr,subj,cr,mpqa,sst2] [--init-from DIR|none]
        [--tag NAME] [--force] [-- extra training.train flags]

For fold k of a data set in ../shared/data/kim2014 (CSV `text,label,fold`), the model trains on the
other folds and is tested on fold k, as Kim did; SST-2 trains on ../shared/data/sst2/train.tsv and is
tested on dev.tsv (872 sentences; Kim's 82.7 / 86.8 are on the SST-2 test). Every run is the command a
user runs, `accelerate launch --num_processes 1 --num_cpu_threads_per_process <cores> -m training.train`,
without a validation file: training.data holds out a seeded 10 % of the training file to pick the
weights (Kim also held out 10 % of the training data as dev). `--folds 1` runs fold 0 only, a quick look.

Fold files and run folders go to runs/kim2014/<tag>/<data set>/ (not the repository); a run whose
results.json exists is reused unless --force, or unless it started from other weights or flags (each run
records a hash of its --init-from weights and its extra flags in start.json). A fold with no run folder
is taken from an earlier benchmarks/results/kim2014-<tag>.json of the same start, so the suite resumes on
a machine that has the repository but not runs/ (the JSON records the same hash and flags). Writes
benchmarks/results/kim2014-<tag>.json (every fold, mean and std per data set, the command, commit, CPU,
date, wall time) and the row of <tag> in the "Kim 2014 suite" table of benchmarks/accuracy.md, beside
Kim's CNN-rand and CNN-static rows.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import RESULTS, ROOT, SHARED_DATA, machine

DATASETS = {"mr": "MR", "subj": "Subj", "cr": "CR", "mpqa": "MPQA", "sst2": "SST-2"}
KIM = {  # accuracy (%) in Kim 2014, Table 2
    "CNN-rand (Kim 2014)": {"mr": 76.1, "subj": 89.6, "cr": 79.8, "mpqa": 83.4, "sst2": 82.7},
    "CNN-static, word2vec (Kim 2014)": {"mr": 81.0, "subj": 93.0, "cr": 84.7, "mpqa": 89.6, "sst2": 86.8},
}
SECTION = "## Kim 2014 suite"
INTRO = """Accuracy (%) on the data sets of Kim, "Convolutional Neural Networks for Sentence Classification"
(EMNLP 2014): MR, Subj, CR and MPQA by cross-validation over the fixed folds of ../shared/data/kim2014
(mean ± std over folds, the number of folds in brackets; Kim's rows are 10-fold means), SST-2 trained on
its GLUE train file and scored on GLUE dev (Kim's SST-2 figures are on the test set). The rows before
`gaze-base` use no weights or word vectors from outside this project (the word vectors of `gaze-imdb-vectors`,
and the MLM of the `mlm-on-vectors` rows, were trained here on IMDB text only); `gaze-base` is the published
all-MiniLM-L6-v2 imported (docs/training.md). 10 % of each training file picks the weights.
Written by `python -m benchmarks.kim2014`; each row's folds and settings are in
`benchmarks/results/kim2014-<tag>.json`."""


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    ours, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=10, help="run folds 0..N-1 of each data set (default 10)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated (default: all five)")
    parser.add_argument("--init-from", default="none", help="a pretrained Gaze folder, or none (from scratch)")
    parser.add_argument("--tag", help="the name of this recipe (default: scratch, or the --init-from folder name)")
    parser.add_argument("--force", action="store_true", help="rerun runs that have a results.json")
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA / "kim2014", help="the <name>.csv files")
    parser.add_argument("--sst2-dir", type=Path, default=SHARED_DATA / "sst2", help="train.tsv and dev.tsv")
    parser.add_argument("--work-dir", type=Path, help="fold files and runs (default: runs/kim2014/<tag>)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where kim2014-<tag>.json goes")
    parser.add_argument("--table", type=Path, default=ROOT / "benchmarks" / "accuracy.md", help="the Markdown file")
    args = parser.parse_args(ours)
    args.datasets = [name.strip() for name in args.datasets.split(",") if name.strip()]
    unknown = [name for name in args.datasets if name not in DATASETS]
    if unknown or not args.datasets:
        parser.error(f"unknown data set(s) {unknown}; choose from {', '.join(DATASETS)}")
    if args.folds < 1:
        parser.error("--folds must be at least 1")
    args.init_from = None if args.init_from.lower() == "none" else args.init_from
    args.tag = args.tag or (Path(args.init_from).name if args.init_from else "scratch")
    args.work_dir = args.work_dir or ROOT / "runs" / "kim2014" / args.tag
    return args, extra


def fold_files(name: str, args: argparse.Namespace) -> dict[int, tuple[Path, Path]]:
    """{k: (train file, test file)}: the other folds and fold k, written to the work folder; SST-2's own files."""
    if name == "sst2":
        return {0: (args.sst2_dir / "train.tsv", args.sst2_dir / "dev.tsv")}
    with (args.data_dir / f"{name}.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"text", "label", "fold"} <= set(rows[0]):
        sys.exit(f"error: {args.data_dir / f'{name}.csv'} needs the columns text,label,fold")
    folds = sorted({int(row["fold"]) for row in rows})
    if args.folds > len(folds):
        sys.exit(f"error: {name}.csv has {len(folds)} folds, fewer than --folds {args.folds}")
    folder = args.work_dir / name / "data"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for k in folds[: args.folds]:
        files[k] = folder / f"fold-{k}-train.csv", folder / f"fold-{k}-test.csv"
        for path, testing in zip(files[k], (False, True), strict=True):
            with path.open("w", encoding="utf-8", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["text", "label"])
                writer.writerows([r["text"], r["label"]] for r in rows if (int(r["fold"]) == k) == testing)
    return files


def train_command(train: Path, test: Path, out: Path, args: argparse.Namespace, extra: list[str]) -> list[str]:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--num_processes", "1"]
    command += ["--num_cpu_threads_per_process", str(os.cpu_count() or 1), "-m", "training.train"]
    command += ["--train-file", str(train), "--test-file", str(test), "--output-dir", str(out)]
    command += ["--overwrite-output-dir", "true", "--cache-dir", str(args.work_dir / "cache")]
    return command + ["--init-from", args.init_from or "none"] + extra


def start_stamp(args: argparse.Namespace, extra: list[str]) -> dict:
    """What a fold's result depends on besides its data: the start's weights (not its path: a folder is
    rebuilt in place, as checkpoints/gaze-base was) and the extra training flags."""
    weights = Path(args.init_from) / "model.safetensors" if args.init_from else None
    digest = hashlib.sha256(weights.read_bytes()).hexdigest() if weights and weights.is_file() else None
    return {"init_from": args.init_from, "weights_sha256": digest, "extra_flags": extra}


def reusable(out: Path, stamp: dict) -> tuple[bool, str]:
    """(reuse the run in `out`?, the note printed with it)."""
    if not (out / "results.json").exists():
        return False, ""
    if not (out / "start.json").exists():
        return True, " (earlier run; its start was not recorded)"
    recorded = json.loads((out / "start.json").read_text())
    if recorded != stamp:
        return False, " (retrained: the earlier run started from other weights or flags)"
    return True, " (earlier run)"


def recorded_folds(json_path: Path, stamp: dict) -> dict[str, dict[int, dict]]:
    """The folds of an earlier results JSON of this tag, if it started from the same weights and flags."""
    if not json_path.is_file():
        return {}
    earlier = json.loads(json_path.read_text(encoding="utf-8"))
    same = {key: earlier.get(key) for key in stamp} == stamp
    if not same:
        return {}
    return {
        name: {int(k): fold for k, fold in summary["runs"].items()} for name, summary in earlier["accuracy_pct"].items()
    }


def run(command: list[str], out: Path) -> dict:
    """Train and test one fold; its results.json, plus the wall time of the whole command."""
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_suffix(".log")
    env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    tic = time.perf_counter()
    with log.open("wb") as f:
        code = subprocess.run(command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if code != 0:
        sys.exit(f"error: {shlex.join(command)}\nfailed (exit {code}); the end of {log}:\n{log.read_text()[-3000:]}")
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # resumable states of a finished run
    results = json.loads((out / "results.json").read_text())
    results["wall_s"] = round(time.perf_counter() - tic, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return (git("rev-parse", "HEAD") or "unknown") + (" (uncommitted changes)" if git("status", "--porcelain") else "")


def cell(summary: dict | None, name: str) -> str:
    if summary is None:
        return "—"
    text = f"{summary['mean']:.1f}"
    if summary["folds"] > 1:
        text += f" ± {summary['std']:.1f}"
    return text if name == "sst2" else f"{text} ({summary['folds']})"


def update_table(path: Path, tag: str, row: str) -> None:
    """Rewrite the Kim 2014 section of `path`: Kim's rows, then ours with the row of `tag` replaced or added."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    before, _, rest = text.partition(SECTION)
    after = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
    ours = [line for line in rest[: len(rest) - len(after)].splitlines() if line.startswith("| `")]
    ours = [line for line in ours if not line.startswith(f"| `{tag}` |")] + [row]
    header = ["recipe", *DATASETS.values(), "settings", "date"]
    kim = [f"| {name} | " + " | ".join(str(v) for v in values.values()) + " | | |" for name, values in KIM.items()]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header), *kim, *ours]
    section = f"{SECTION}\n\n{INTRO}\n\n" + "\n".join(lines) + "\n"
    before = before.rstrip("\n") + "\n\n" if before.strip() else ""
    path.write_text(before + section + ("\n" + after if after else ""), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args, extra = parse_args(argv)
    for name in args.datasets:
        needed = [args.sst2_dir / "train.tsv", args.sst2_dir / "dev.tsv"] if name == "sst2" else []
        needed = needed or [args.data_dir / f"{name}.csv"]
        for path in needed:
            if not path.parent.is_dir():
                sys.exit(f"error: the data folder {path.parent} is missing (see ../shared/data/kim2014/README.md)")
            if not path.is_file():
                sys.exit(f"error: {path} is missing from the data folder")

    tic = time.perf_counter()
    stamp = start_stamp(args, extra)
    plan = [(name, k, files) for name in args.datasets for k, files in fold_files(name, args).items()]
    json_path = args.results_dir / f"kim2014-{args.tag}.json"
    recorded = {} if args.force else recorded_folds(json_path, stamp)
    runs: dict[str, dict[int, dict]] = {name: {} for name in args.datasets}
    for done, (name, k, (train, test)) in enumerate(plan, 1):
        out = args.work_dir / name / f"fold-{k}"
        earlier, note = reusable(out, stamp)
        if earlier and not args.force:
            results = json.loads((out / "results.json").read_text())
        elif not (out / "results.json").exists() and k in recorded.get(name, {}):
            results, note = recorded[name][k], f" (earlier run, from {json_path.name})"
        else:
            names = ["--label-names", "negative", "positive"] if name == "sst2" else []  # its labels are 0 and 1
            results = run(train_command(train, test, out, args, names + extra), out)
            (out / "start.json").write_text(json.dumps(stamp) + "\n")
            note = "" if earlier else note  # --force retrains without a note; other weights or flags say so
        runs[name][k] = {key: results.get(key) for key in ("test_accuracy", "eval_accuracy", "train_time_s", "wall_s")}
        print(
            f"[{done}/{len(plan)}] {name} fold {k}: test accuracy {100 * results['test_accuracy']:.2f} %, "
            f"train {results['train_time_s']:.1f} s, wall {results['wall_s']:.0f} s{note}",
            flush=True,
        )

    summary = {}
    for name, folds in runs.items():
        accuracies = [100 * fold["test_accuracy"] for fold in folds.values()]
        std = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        summary[name] = {"mean": round(statistics.mean(accuracies), 2), "std": round(std, 2), "folds": len(folds)}
        summary[name]["runs"] = folds
    wall = round(time.perf_counter() - tic, 1)
    info = machine()
    example = train_command(Path("<train file>"), Path("<test file>"), Path("<run folder>"), args, extra)
    data = {
        "benchmark": "kim2014",
        "tag": args.tag,
        "command": shlex.join(["python", "-m", "benchmarks.kim2014", *argv]),
        "train_command": shlex.join(example),
        "init_from": args.init_from,
        "extra_flags": extra,
        "weights_sha256": stamp["weights_sha256"],
        "git_commit": git_commit(),
        "cpu": info["cpu"],
        "date_utc": info["date_utc"],
        "wall_time_s": wall,
        "machine": info,
        "accuracy_pct": summary,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    settings = " ".join(([f"--init-from {args.init_from}"] if args.init_from else ["from scratch"]) + extra)
    cells = [cell(summary.get(name), name) for name in DATASETS]
    row = f"| `{args.tag}` | " + " | ".join(cells) + f" | `{settings}` | {info['date_utc'][:10]} |"
    update_table(args.table, args.tag, row)
    for name, s in summary.items():
        print(f"{DATASETS[name]}: {s['mean']:.2f} ± {s['std']:.2f} % over {s['folds']} fold(s)")
    print(f"{len(plan)} runs in {wall:.0f} s; wrote {json_path} and the {args.tag!r} row of {args.table}")


if __name__ == "__main__":
    main()
