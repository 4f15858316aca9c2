"""The ``pbfast`` command line: version, help, and one clear line with exit 2 for every wrong flag."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pbfast


def run_pbfast(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pbfast", *args], capture_output=True, text=True, timeout=30,
                          env=env)


def test_version() -> None:
    result = run_pbfast("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"pbfast {pbfast.__version__}"


def test_console_script_version() -> None:
    result = subprocess.run(["pbfast", "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("pbfast ")


def test_serve_help_lists_guide_flags() -> None:
    result = run_pbfast("serve", "--help")
    assert result.returncode == 0
    for flag in ("--mode", "--data-dir", "--s3-endpoint", "--s3-bucket", "--node-id", "--raft-bind-addr",
                 "--http-addr", "--control-plane-addrs", "--node-address", "--max-tenants", "--debug",
                 "--gateway-addr", "--admin-token"):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["serve", "--mode=gateway", "--bogus"], "unrecognized arguments: --bogus"),
        (["serve", "--mode=nope"], "invalid choice"),
        (["serve", "--mode=gateway"], "--mode=gateway needs --control-plane-addrs"),
        (["serve", "--mode=tenant-node"], "--mode=tenant-node needs --control-plane-addrs"),
        (["serve", "--mode=gateway", "--control-plane-addrs=127.0.0.1:8090", "--raft-bind-addr=127.0.0.1:1"],
         "--raft-bind-addr does not apply to --mode=gateway"),
        (["serve", "--mode=control-plane", "--gateway-addr=127.0.0.1:1"], "--gateway-addr does not apply"),
        (["serve", "--mode=tenant-node", "--control-plane-addrs=127.0.0.1:8090", "--admin-token=" + "x" * 20],
         "--admin-token does not apply"),
        (["serve", "--http-addr=localhost"], "--http-addr: expected host:port"),
        (["serve", "--http-addr=127.0.0.1:70000"], "port must be 1-65535"),
        (["serve", "--max-tenants=0"], "--max-tenants must be at least 1"),
        (["serve", "--max-tenants=many"], "invalid int value"),
        (["serve", "--node-id=Node_1"], "--node-id must be a DNS label"),
        (["serve", "--s3-endpoint=minio:9000"], "--s3-endpoint must be an http:// or https:// URL"),
        (["serve", "--admin-token=short"], "admin token must be at least 16"),
        (["serve", "--http-addr=127.0.0.1:9000", "--gateway-addr=127.0.0.1:9000"], "must differ"),
        (["serve", "--mode=gateway", "--control-plane-addrs=,"], "expected a comma-separated list"),
        (["frobnicate"], "invalid choice"),
        (["serve", "--mode=control-plane"], "--mode=control-plane needs --cluster-token"),
        (["serve", "--mode=gateway", "--control-plane-addrs=127.0.0.1:8090"], "needs --cluster-token"),
        (["serve", "--mode=control-plane", "--cluster-token=" + "c" * 20, "--raft-peers=127.0.0.1:9"],
         "needs --admin-token"),
        (["serve", "--raft-peers=127.0.0.1:9"], "--raft-peers does not apply to --mode=all-in-one"),
        (["serve", "--cluster-token=short"], "the cluster token must be at least 16"),
        (["serve", "--node-timeout=0.1"], "--node-timeout must be between"),
        (["tenant", "create"], "the following arguments are required: id"),
        (["serve", "--tenant-idle-seconds=0"], "--tenant-idle-seconds must be between 1 and 86400"),
        (["serve", "--mode=gateway", "--control-plane-addrs=127.0.0.1:1", "--tenant-idle-seconds=5"],
         "--tenant-idle-seconds does not apply to --mode=gateway"),
        (["tenant", "update", "x", "--storage-quota-mb=-5"], "must not be negative"),
        (["serve", "--exact-restore-hours=-1"], "--exact-restore-hours must be between 0 and 168"),
        (["serve", "--restore-window-hours=12"], "--restore-window-hours must be between"),
        (["serve", "--exact-restore-hours=48", "--restore-window-hours=30"], "--restore-window-hours must be between"),
        (["serve", "--mode=gateway", "--control-plane-addrs=127.0.0.1:1", "--exact-restore-hours=2"],
         "--exact-restore-hours does not apply to --mode=gateway"),
        (["serve", "--workers=0"], "--workers must be between 1 and 64"),
        (["serve", "--workers=many"], "--workers must be a number or 'auto'"),
        (["serve", "--mode=gateway", "--control-plane-addrs=127.0.0.1:1", "--workers=2"],
         "--workers does not apply to --mode=gateway"),
        (["serve", "--gateway-held-stream-limit-kb=8"], "--gateway-held-stream-limit-kb must be between 64"),
        (["serve", "--gateway-held-stream-limit-kb=8192", "--gateway-held-streams-budget-mb=4"],
         "--gateway-held-streams-budget-mb must hold one stream's limit"),
        (["serve", "--gateway-held-stream-timeout=0"], "--gateway-held-stream-timeout must be between 1 and 3600"),
        (["serve", "--mode=tenant-node", "--control-plane-addrs=127.0.0.1:1", "--gateway-held-stream-timeout=5"],
         "--gateway-held-stream-timeout does not apply to --mode=tenant-node"),
        (["serve", "--realtime-gateway-timeout=0.5"], "--realtime-gateway-timeout must be between 1 and 3600"),
        (["serve", "--mode=gateway", "--control-plane-addrs=127.0.0.1:1", "--realtime-gateway-timeout=5"],
         "--realtime-gateway-timeout does not apply to --mode=gateway"),
    ],
)
def test_wrong_flags_exit_2_with_one_line(args: list[str], expected: str) -> None:
    result = run_pbfast(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pbfast: error: ") and expected in lines[0], lines[0]
    assert result.stdout == ""


def test_bad_log_level_exits_2() -> None:
    import os

    result = run_pbfast("serve", env={**os.environ, "PB_LOG_LEVEL": "LOUD"})
    assert result.returncode == 2
    assert "PB_LOG_LEVEL must be one of DEBUG, INFO, WARN, ERROR" in result.stderr


def test_the_stream_mux_switch_from_the_environment_is_checked() -> None:
    import os

    result = run_pbfast("serve", env={**os.environ, "PBFAST_STREAM_MUX": "maybe"})
    assert result.returncode == 2
    assert "PBFAST_STREAM_MUX must be on or off" in result.stderr


def test_workers_from_the_environment_are_checked_too() -> None:
    import os

    result = run_pbfast("serve", env={**os.environ, "PBFAST_WORKERS": "100"})
    assert result.returncode == 2
    assert "--workers must be between 1 and 64, got 100" in result.stderr
