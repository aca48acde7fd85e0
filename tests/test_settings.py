"""service/config.py: the service settings read from the environment (`Settings`), and their defaults."""

import pytest

from service.config import Settings, cpu_count


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("GAZE_WORKERS", "GAZE_THREADS", "GAZE_PRECISION"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_default_is_a_worker_per_core_with_one_thread_each(clean_env):
    settings = Settings.from_env()
    assert (settings.workers, settings.threads, settings.precision) == (cpu_count(), 1, "fp32")


def test_fewer_workers_share_the_cores(clean_env):
    clean_env.setenv("GAZE_WORKERS", "1")
    assert Settings.from_env().threads == cpu_count()
    clean_env.setenv("GAZE_THREADS", "3")
    assert Settings.from_env().threads == 3


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GAZE_WORKERS", "two", "GAZE_WORKERS='two' is not an integer"),
        ("GAZE_WORKERS", "0", "GAZE_WORKERS=0 must be at least 1"),
        ("GAZE_PRECISION", "fp16", "GAZE_PRECISION='fp16' is not one of fp32, bf16"),
    ],
)
def test_a_bad_setting_is_named(clean_env, name, value, message):
    clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        Settings.from_env()
