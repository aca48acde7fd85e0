"""benchmarks/kim2014.py end to end on a tiny synthetic suite: real training runs, the JSON and the table."""

import json
import random
import shutil

import pytest

from benchmarks import kim2014

TINY = [
    "--hidden-size", "32", "--num-hidden-layers", "1", "--num-attention-heads", "2", "--intermediate-size", "64",
    "--max-steps", "5", "--vocab-size", "200", "--max-seq-length", "32", "--save-steps", "1000",
]  # fmt: skip
WORDS = {"positive": ["good", "fine", "great", "moving"], "negative": ["bad", "dull", "awful", "tedious"]}


def suite(folder, name: str, rows: int = 40):
    """A <name>.csv like ../shared/data/kim2014's: text,label,fold with folds 0 and 1."""
    rng = random.Random(name)
    lines = ["text,label,fold"]
    for i in range(rows):
        label = "positive" if i % 2 else "negative"
        lines.append(f'"a {rng.choice(WORDS[label])} , {rng.choice(WORDS[label])} film .",{label},{i % 4 // 2}')
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_suite_end_to_end_resumes_and_replaces_its_row(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stray accelerate config
    data, table = tmp_path / "data", tmp_path / "accuracy.md"
    suite(data, "mr")
    suite(data, "cr")
    table.write_text("# Accuracy\n\nintro\n\n## Kim 2014 suite\n\n| `other` | 1 | | | | | | |\n\n## Reproduce\n\nx\n")
    paths = ["--data-dir", str(data), "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path)]
    paths += ["--table", str(table), "--tag", "tiny"]

    kim2014.main([*paths, "--datasets", "mr,cr", "--folds", "1", "--", *TINY])
    out = capsys.readouterr().out
    assert "[1/2] mr fold 0: test accuracy" in out and "[2/2] cr fold 0: test accuracy" in out
    first = json.loads((tmp_path / "kim2014-tiny.json").read_text())
    assert first["accuracy_pct"]["mr"]["folds"] == 1 and set(first["accuracy_pct"]) == {"mr", "cr"}
    assert first["extra_flags"] == TINY and first["git_commit"] and first["cpu"] and first["wall_time_s"] > 0
    assert "--test-file" in first["train_command"] and "--validation-file" not in first["train_command"]
    run = json.loads((tmp_path / "work" / "mr" / "fold-0" / "results.json").read_text())
    assert run["validation_examples"] == 2 and run["train_examples"] == 18  # 10 % of fold 1's 20 rows held out
    log = (tmp_path / "work" / "mr" / "fold-0.log").read_text()
    assert "held out 2 of 20 examples" in log

    # Fold 0 of mr is reused; fold 1 runs; the row of the tag is replaced, other rows and sections kept.
    kim2014.main([*paths, "--datasets", "mr", "--folds", "2", "--", *TINY])
    out = capsys.readouterr().out
    assert "[1/2] mr fold 0" in out and "(earlier run)" in out.splitlines()[0] and "[2/2] mr fold 1" in out
    result = json.loads((tmp_path / "kim2014-tiny.json").read_text())
    mr = result["accuracy_pct"]["mr"]
    accuracies = [100 * r["test_accuracy"] for r in mr["runs"].values()]
    assert mr["folds"] == 2 and mr["mean"] == pytest.approx(sum(accuracies) / 2, abs=0.01)
    assert mr["runs"]["0"] == first["accuracy_pct"]["mr"]["runs"]["0"]

    # Other flags (or other weights in the same --init-from folder): the earlier fold is not reused.
    kim2014.main([*paths, "--datasets", "mr", "--folds", "1", "--", *TINY, "--seed", "7"])
    out = capsys.readouterr().out
    assert "[1/1] mr fold 0" in out and "(retrained: the earlier run started from other weights or flags)" in out
    stamp = json.loads((tmp_path / "work" / "mr" / "fold-0" / "start.json").read_text())
    assert stamp == {"init_from": None, "weights_sha256": None, "extra_flags": [*TINY, "--seed", "7"]}
    kim2014.main([*paths, "--datasets", "mr", "--folds", "2", "--", *TINY])  # the table row as before, again

    # A new machine has the results JSON but not the run folders: its folds are reused, not retrained.
    before = json.loads((tmp_path / "kim2014-tiny.json").read_text())["accuracy_pct"]["mr"]
    shutil.rmtree(tmp_path / "work")
    kim2014.main([*paths, "--datasets", "mr", "--folds", "2", "--", *TINY])
    out = capsys.readouterr().out
    assert out.count("(earlier run, from kim2014-tiny.json)") == 2
    assert not (tmp_path / "work" / "mr" / "fold-0").exists()
    assert json.loads((tmp_path / "kim2014-tiny.json").read_text())["accuracy_pct"]["mr"] == before

    text = table.read_text()
    assert text.startswith("# Accuracy\n\nintro\n\n## Kim 2014 suite\n") and text.endswith("## Reproduce\n\nx\n")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| recipe | MR | Subj | CR | MPQA | SST-2 |")
    assert rows[2].startswith("| CNN-rand (Kim 2014) | 76.1 | 89.6 | 79.8 | 83.4 | 82.7 |")
    assert rows[3].startswith("| CNN-static, word2vec (Kim 2014) | 81.0 | 93.0 | 84.7 | 89.6 | 86.8 |")
    assert rows[4] == "| `other` | 1 | | | | | | |"
    assert len(rows) == 6 and rows[5].startswith(f"| `tiny` | {mr['mean']:.1f} ± {mr['std']:.1f} (2) | — | — |")


def test_missing_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match=r"the data folder .*nowhere is missing"):
        kim2014.main(["--data-dir", str(tmp_path / "nowhere"), "--datasets", "mr", "--work-dir", str(tmp_path)])
