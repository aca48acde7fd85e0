"""Everything a run writes that must never be left half-written: checkpoints, the final folder.

One rule everywhere: write into a staging path beside the target, then rename it into place. A
crash (or a full disk) leaves the previous version untouched and at most a hidden `.tmp-*` path.
"""

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from training.config import RunError

# What a run writes into --output-dir besides the model files (records.py) and checkpoints/.
RUN_RECORDS = ("metrics.jsonl", "results.json", "learning_curve.png", "tensorboard")


# ---------------------------------------------------------------------------------------------
# Staged writes
# ---------------------------------------------------------------------------------------------


def staging_path(target: Path) -> Path:
    """The hidden path beside `target` that a write goes to first (the same one on every process)."""
    return target.with_name(f".tmp-{target.name}")


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def commit(staging: Path, target: Path) -> None:
    """Move a complete file or folder over `target`: a file in one rename; a folder by moving the old
    one aside first (a folder cannot be renamed over a non-empty one)."""
    if target.is_dir() and not target.is_symlink():
        old = target.with_name(f".old-{target.name}")
        remove(old)
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old)
    else:
        os.replace(staging, target)


def make_readable(path: Path) -> None:
    """Model folders are meant to be shared, but safetensors writes its files private (0600)."""
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        item.chmod(0o755 if item.is_dir() else 0o644)


@contextlib.contextmanager
def staged(target: str | Path) -> Iterator[Path]:
    """Yield a fresh path to write a file or folder into; it replaces `target` when the block ends
    without an error, and is removed (leaving `target` untouched) when it does not."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(target)
    remove(staging)
    try:
        yield staging
        make_readable(staging)
        commit(staging, target)
    finally:
        remove(staging)


def write_json(path: Path, data: Any) -> None:
    with staged(path) as staging:
        staging.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def disk_full_error(error: Exception, what: str, where: Path, intact: str) -> OSError:
    """An OSError that says what could not be written, why, how much space is left and what survived."""
    free = shutil.disk_usage(where if where.exists() else where.parent).free
    return OSError(
        getattr(error, "errno", None) or errno.EIO,
        f"could not save {what} in {where} ({type(error).__name__}: {error}; {free:,} bytes free); {intact}",
    )


# ---------------------------------------------------------------------------------------------
# The output folder and resumable checkpoints
# ---------------------------------------------------------------------------------------------


class Checkpoints:
    """Resumable training states under `output_dir/checkpoints/step-N`."""

    def __init__(self, output_dir: str | Path):
        self.root = Path(output_dir) / "checkpoints"

    def all(self) -> list[Path]:
        found = [p for p in self.root.glob("step-*") if (p / "training_state.json").exists()]
        return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def save(self, accelerator: Accelerator, step: int, state: dict[str, Any], keep: int) -> Path:
        """Collective: every process writes its part of the state; the main process renames and keeps the
        newest `keep`."""
        final = self.root / f"step-{step}"
        staging = staging_path(final)
        if accelerator.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            remove(staging)
        accelerator.wait_for_everyone()
        try:
            accelerator.save_state(str(staging))
            if accelerator.is_main_process:
                write_json(staging / "training_state.json", {**state, "step": step})
        except Exception as error:  # a full disk may come as torch's RuntimeError or a SafetensorError
            if accelerator.is_main_process:
                remove(staging)  # the partial state would keep the disk full
            previous = self.latest()
            intact = f"the previous checkpoint {previous.name if previous else '(none)'} is intact"
            raise disk_full_error(error, f"checkpoint step-{step}", self.root, intact) from error
        accelerator.wait_for_everyone()  # every process's part is written before the folder moves
        if accelerator.is_main_process:
            commit(staging, final)
            for old in self.all()[:-keep]:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()
        return final

    def load_newest_readable(self, accelerator: Accelerator, newest: Path) -> tuple[Path, dict[str, Any]]:
        """Load `newest`, or when it cannot be read (a file cut short or damaged), the newest older one that
        can be, saying so: `--resume` loses the steps since that checkpoint, not the run."""
        steps = {p: int(p.name.removeprefix("step-")) for p in self.all()}
        older = [p for p in reversed(steps) if steps[p] < steps.get(newest, 0)]
        for path in [newest, *older]:
            try:
                return path, self.load(accelerator, path)
            except Exception as error:  # torch, safetensors and json each raise their own kind
                reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
                accelerator.print(f"warning: checkpoint {path} cannot be read ({reason}); trying the one before")
        raise RunError(f"--resume: no readable checkpoint under {self.root}; start without --resume")

    @staticmethod
    def load(accelerator: Accelerator, path: str | Path) -> dict[str, Any]:
        path = Path(path)
        if not (path / "training_state.json").exists():
            raise RunError(f"{path} is not a complete checkpoint (no training_state.json)")
        missing = [i for i in range(accelerator.num_processes) if not _readable(path / f"random_states_{i}.pkl")]
        if missing:
            accelerator.print(
                f"warning: {path} has no readable random state for process(es) {missing}: the run resumes, "
                "but its dropout masks and data order differ from the uninterrupted run's (not an exact resume)"
            )
        accelerator.load_state(str(path))
        return json.loads((path / "training_state.json").read_text())


def _readable(path: Path) -> bool:
    try:
        torch.load(path, weights_only=False)
    except Exception:
        return False
    return True


def claim_output_dir(
    accelerator: Accelerator,
    output_dir: str | Path,
    overwrite_output_dir: bool,
    resume: bool = False,
    resume_from: str | None = None,
) -> Path | None:
    """The checkpoint to resume from, or None for a fresh start in an empty (or overwritten) folder.

    Only a run's own checkpoints are continued (`--resume`); any other non-empty folder (a saved
    model, an earlier run) is refused unless `--overwrite-output-dir`, so nothing is lost by a typo.
    """
    output_dir = Path(output_dir)
    checkpoints = Checkpoints(output_dir)
    if resume_from:
        return Path(resume_from)
    if resume:
        latest = checkpoints.latest()
        if latest is None:
            raise RunError(f"--resume: no checkpoint under {checkpoints.root}; start without --resume")
        return latest
    if output_dir.exists() and not output_dir.is_dir():
        raise RunError(f"--output-dir {output_dir} is a file, not a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"--output-dir {output_dir}: cannot create it ({error.strerror})") from None
    existing = sorted(p.name for p in output_dir.iterdir()) if output_dir.is_dir() else []
    if existing and not overwrite_output_dir:
        shown = ", ".join(existing[:4]) + (", ..." if len(existing) > 4 else "")
        raise RunError(
            f"--output-dir {output_dir} is not empty ({shown}): pass --resume to continue the run that wrote it, "
            "--overwrite-output-dir true to replace it, or another --output-dir"
        )
    accelerator.wait_for_everyone()
    if existing and accelerator.is_main_process:  # the model files stay until the new ones replace them
        for name in ("checkpoints", *RUN_RECORDS):
            remove(output_dir / name)
    accelerator.wait_for_everyone()
    return None


def save_pretrained_atomically(
    model: torch.nn.Module,
    tokenizer: Any,
    output_dir: str | Path,
    write_card: Callable[[Path], None],
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the final HF folder into a staging folder inside `output_dir`, then move its files in.

    Each file is complete before it is renamed over its predecessor; other files in `output_dir`
    (checkpoints/, metrics.jsonl) stay. `state_dict` (from the collective `accelerator.get_state_dict`)
    is needed where the model is sharded (FSDP); by default the model's own weights are written.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = output_dir / ".tmp-model" / output_dir.resolve().name  # the card's title is the folder name
    remove(staging.parent)
    try:
        model.save_pretrained(staging, state_dict=state_dict)
        tokenizer.save_pretrained(staging)
        write_card(staging)
        make_readable(staging)
        for item in staging.iterdir():
            os.replace(item, output_dir / item.name)
    except Exception as error:  # a full disk may come as a SafetensorError
        raise disk_full_error(error, "the model", output_dir, "the files already there are untouched") from error
    finally:
        remove(staging.parent)
