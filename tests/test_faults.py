"""Faults: a killed server comes back; a checkpoint that cannot be written fails clearly and leaves the
previous one intact.

Training killed with SIGKILL at a step and resumed to bit-identical weights is tested in
tests/test_training.py::test_kill_and_resume_gives_bit_identical_weights (not repeated here).

The tests run as root, where `chmod 555` does not stop writes. A full disk is produced for real with a
tiny tmpfs mounted over the output folder, and a read-only folder with `chattr +i` (immutable: refused
even to root); both skip where the machine does not allow mounting or chattr. A third test, which
always runs, mocks a full disk at the lowest write call this code reaches from Python (safetensors'
`save_file`, called by accelerate for the weights) with OSError(ENOSPC).
"""

import contextlib
import errno
import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import psutil
import pytest
import torch
from accelerate import Accelerator
from conftest import tiny_config

from benchmarks.harness import bentoml_serve, free_port, launch, server_env, stop, wait_ready
from benchmarks.loadgen import LoadResult, contract_problems, load
from model import GazeForSequenceClassification
from training.checkpoints import Checkpoints, save_pretrained_atomically

# -- checkpoints ------------------------------------------------------------------------------


@pytest.fixture
def training(tiny_tokenizer):
    """A prepared tiny model + optimizer after one step, and its accelerator."""
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = GazeForSequenceClassification(tiny_config(vocab_size=len(tiny_tokenizer)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    batch = tiny_tokenizer(["a fine film", "a dull mess"], return_tensors="pt", padding=True)
    loss = model(**batch, labels=torch.tensor([1, 0])).loss
    accelerator.backward(loss)
    optimizer.step()
    optimizer.zero_grad()
    return accelerator, model, optimizer


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def step(model, optimizer, accelerator, tokenizer):
    batch = tokenizer(["a gripping film", "boring"], return_tensors="pt", padding=True)
    accelerator.backward(model(**batch, labels=torch.tensor([1, 0])).loss)
    optimizer.step()
    optimizer.zero_grad()


def assert_previous_intact(checkpoints: Checkpoints, before: dict[str, str], accelerator, model):
    """step-1 is still the latest complete checkpoint, byte for byte, and it loads."""
    assert checkpoints.latest() == checkpoints.root / "step-1"
    assert digest(checkpoints.root / "step-1") == before
    saved = {k: v.clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    state = Checkpoints.load(accelerator, checkpoints.root / "step-1")
    assert state["step"] == 1
    reloaded = accelerator.unwrap_model(model).state_dict()
    assert any(not torch.equal(saved[k], reloaded[k]) for k in saved), "loading step-1 should restore older weights"


@contextlib.contextmanager
def tiny_tmpfs(folder: Path, size_bytes: int):
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); the mocked-ENOSPC test covers it")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def full_disk(training, tiny_tokenizer, tmp_path):
    """A run whose output folder is a tmpfs that holds step-1 but not step-2; yields after the failed save."""
    accelerator, model, optimizer = training
    # The size of one checkpoint, measured on the normal disk.
    probe = Checkpoints(tmp_path / "probe")
    size = sum(p.stat().st_size for p in probe.save(accelerator, 1, {"epoch": 0}, keep=2).rglob("*") if p.is_file())
    with tiny_tmpfs(tmp_path / "full", int(size * 1.6)) as out:
        checkpoints = Checkpoints(out)
        checkpoints.save(accelerator, 1, {"epoch": 0}, keep=2)
        before = digest(checkpoints.root / "step-1")
        final = out / "model"  # a final HF folder from an earlier save
        final.mkdir()
        (final / "config.json").write_text('{"old": true}')
        step(model, optimizer, accelerator, tiny_tokenizer)
        with pytest.raises(OSError) as caught:
            checkpoints.save(accelerator, 2, {"epoch": 0}, keep=2)
        yield SimpleNamespace(checkpoints=checkpoints, before=before, error=caught.value, final=final)


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(full_disk, training, tiny_tokenizer):
    accelerator, model, _ = training
    assert_previous_intact(full_disk.checkpoints, full_disk.before, accelerator, model)

    # The final HF folder: a failed save over an existing one leaves the old files whole.
    final = full_disk.final
    with pytest.raises(OSError, match="could not save the model"):
        save_pretrained_atomically(accelerator.unwrap_model(model), tiny_tokenizer, final, lambda folder: None)
    assert (final / "config.json").read_text() == '{"old": true}'
    assert not (final / "model.safetensors").exists()


def test_disk_full_while_checkpointing_gives_a_clear_error_and_frees_the_partial_state(full_disk):
    message = str(full_disk.error)
    assert "step-2" in message and str(full_disk.checkpoints.root) in message, message
    assert "No space left on device" in message or "bytes free" in message, message
    assert not (full_disk.checkpoints.root / ".tmp-step-2").exists(), "the partial checkpoint still takes the space"


def test_read_only_checkpoint_folder_fails_clearly_and_keeps_the_previous_checkpoint(
    training, tiny_tokenizer, tmp_path
):
    accelerator, model, optimizer = training
    checkpoints = Checkpoints(tmp_path / "run")
    checkpoints.save(accelerator, 1, {"epoch": 0}, keep=2)
    before = digest(checkpoints.root / "step-1")
    step(model, optimizer, accelerator, tiny_tokenizer)
    result = subprocess.run(["chattr", "+i", str(checkpoints.root)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"chattr +i is not available here ({result.stderr.strip()}); the mocked-ENOSPC test covers it")
    try:
        with pytest.raises(OSError) as caught:
            checkpoints.save(accelerator, 2, {"epoch": 0}, keep=2)
        assert caught.value.errno in (errno.EPERM, errno.EACCES, errno.EROFS), caught.value
        assert ".tmp-step-2" in str(caught.value) or "step-2" in str(caught.value), caught.value
    finally:
        subprocess.run(["chattr", "-i", str(checkpoints.root)], check=True)
    assert_previous_intact(checkpoints, before, accelerator, model)


def test_mocked_disk_full_while_writing_weights(training, tiny_tokenizer, tmp_path, monkeypatch):
    accelerator, model, optimizer = training
    checkpoints = Checkpoints(tmp_path / "run")
    checkpoints.save(accelerator, 1, {"epoch": 0}, keep=2)
    before = digest(checkpoints.root / "step-1")
    step(model, optimizer, accelerator, tiny_tokenizer)

    import accelerate.utils.other

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # accelerate's save() writes model weights with safetensors' save_file, imported under this name.
    monkeypatch.setattr(accelerate.utils.other, "safe_save_file", full)
    with pytest.raises(OSError) as caught:
        checkpoints.save(accelerator, 2, {"epoch": 0}, keep=2)
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert_previous_intact(checkpoints, before, accelerator, model)
    # The next save (disk space back) succeeds and becomes the latest.
    step(model, optimizer, accelerator, tiny_tokenizer)
    assert checkpoints.save(accelerator, 3, {"epoch": 0}, keep=2) == checkpoints.latest()


# -- the server killed with SIGKILL ------------------------------------------------------------

SENTENCES = ["a gripping , funny and moving film .", "dull", "it 's a dull , lifeless mess .", "a fine film"]
PAYLOADS = [{"texts": [s], "attention": "cls"} for s in SENTENCES]


def serves(url: str, n: int = 5) -> None:
    for text in SENTENCES[:n]:
        request = {"texts": [text], "attention": "cls"}
        response = httpx.post(f"{url}/classify", json=request, timeout=30)
        assert response.status_code == 200, response.text
        assert contract_problems(request, response.json(), ["negative", "positive"]) == []


def sigkill_under_load(url: str, victims: list[psutil.Process], *, load_s: float, kill_at_s: float) -> LoadResult:
    """Load `url` with 8 clients for `load_s` seconds and SIGKILL `victims` `kill_at_s` seconds in."""
    results = {}
    loader = threading.Thread(
        target=lambda: results.update(r=load(f"{url}/classify", PAYLOADS, clients=8, duration=load_s, timeout=10))
    )
    loader.start()
    time.sleep(kill_at_s)
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.send_signal(signal.SIGKILL)
    loader.join()
    return results["r"]


def test_server_killed_with_sigkill_under_load_comes_back(tiny_model_dir, tmp_path):
    """SIGKILL the worker under load: BentoML starts a new one. Then SIGKILL every process of the
    server under load: a new `bentoml serve` on the same port serves again."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = server_env(tmp_path / "home", GAZE_MODEL=tiny_model_dir)
    log = tmp_path / "server.log"
    process = launch(bentoml_serve(port), env=env, log_path=log)
    try:
        wait_ready(url, process, 180, log)
        serves(url)

        # 1. The worker dies under load; the arbiter replaces it.
        workers = psutil.Process(process.pid).children(recursive=True)
        assert workers, "bentoml serve has no worker process"
        result = sigkill_under_load(url, workers, load_s=6, kill_at_s=2)
        assert result.statuses[200] > 0, "no request succeeded before the kill"
        wait_ready(url, process, 120, log)
        serves(url)
        assert process.poll() is None

        # 2. The whole server dies under load: SIGKILL to `bentoml serve` and every process it started (a
        # worker leads its own process group, so killing the server's group alone leaves it serving).
        everything = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        result = sigkill_under_load(url, everything, load_s=4, kill_at_s=1.5)
        process.wait(timeout=10)
        psutil.wait_procs(everything, timeout=10)
        assert result.statuses[0] > 0, f"clients should have seen the server go away: {result.summary()}"
    finally:
        stop(process)

    restarted = launch(bentoml_serve(port), env=env, log_path=log)
    try:
        wait_ready(url, restarted, 180, log)
        serves(url)
    finally:
        stop(restarted)
