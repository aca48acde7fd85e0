"""service/config.py: the service settings read from the environment (`Settings`), and their defaults."""

import pytest

from service.config import Settings, cpu_count


@pytest.fixture
def clean_env(monkeypatch):
    for name in (
        "GAZE_WORKERS",
        "GAZE_THREADS",
        "GAZE_PRECISION",
        "GAZE_BODY_TIMEOUT_S",
        "GAZE_SEND_TIMEOUT_S",
        "GAZE_MAX_PENDING_BYTES",
        "GAZE_MAX_RECEIVING_BYTES",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_default_is_a_worker_per_core_with_one_thread_each(clean_env):
    settings = Settings.from_env()
    assert (settings.workers, settings.threads, settings.precision) == (cpu_count(), 1, "auto")


def test_slow_client_limits_default_and_parse(clean_env):
    settings = Settings.from_env()
    assert (settings.body_timeout_s, settings.send_timeout_s, settings.max_pending_bytes) == (10, 30, 256_000_000)
    assert settings.max_receiving_bytes == 64_000_000
    clean_env.setenv("GAZE_BODY_TIMEOUT_S", "2.5")
    clean_env.setenv("GAZE_MAX_PENDING_BYTES", "1000")
    clean_env.setenv("GAZE_MAX_RECEIVING_BYTES", "2000")
    settings = Settings.from_env()
    assert (settings.body_timeout_s, settings.max_pending_bytes, settings.max_receiving_bytes) == (2.5, 1000, 2000)


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
        ("GAZE_PRECISION", "fp16", "GAZE_PRECISION='fp16' is not one of auto, fp32, bf16"),
        ("GAZE_BODY_TIMEOUT_S", "0", "GAZE_BODY_TIMEOUT_S=0 must be above 0"),
        ("GAZE_SEND_TIMEOUT_S", "nan", "GAZE_SEND_TIMEOUT_S=nan must be above 0"),
        ("GAZE_SEND_TIMEOUT_S", "soon", "GAZE_SEND_TIMEOUT_S='soon' is not a number"),
    ],
)
def test_a_bad_setting_is_named(clean_env, name, value, message):
    clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        Settings.from_env()
