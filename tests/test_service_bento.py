"""`make bento`'s path: the model into the model store, `bentoml build` offline, `bentoml serve <bento>`."""

import os
import subprocess
import sys

import httpx
import yaml

from benchmarks.harness import ROOT, served, server_env


def test_bento_builds_offline_carries_the_model_and_serves(tiny_model_dir, tmp_path):
    home = tmp_path / "bentoml-home"
    env = server_env(home)
    result = subprocess.run(
        [sys.executable, "-m", "service.bento", "--model", str(tiny_model_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    model_tag, bento_tag = lines["model"], lines["bento"]
    assert model_tag.startswith("gaze-sst2:") and bento_tag.startswith("gaze:")

    name, version = bento_tag.split(":")
    info = yaml.safe_load((home / "bentos" / name / version / "bento.yaml").read_text())
    assert [m["tag"] for s in info["services"] for m in s["models"]] == [model_tag]
    stored = home / "models" / "gaze-sst2" / model_tag.split(":")[1]
    assert (stored / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()

    # Served from elsewhere, with no GAZE_MODEL: the Bento's own model is used.
    assert "GAZE_MODEL" not in env
    with served(bento_tag, env=env, cwd=tmp_path, log_path=tmp_path / "bento-server.log") as url:
        response = httpx.post(f"{url}/classify", json={"texts": ["a fine film"], "attention": "rollout"}, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["attention"]["shape"] == [6]
        assert httpx.get(f"{url}/ui/").status_code == 200
    assert os.path.isdir(stored)
