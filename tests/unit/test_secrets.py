"""Secret handling without a server: masking, files, prompts."""

from __future__ import annotations

import logging
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from fleetflow._runlog import RunLog
from fleetflow._runner import RunnerRequest, _cmdline, _passwords, _secret_envvars
from fleetflow.results import HostFailure, HostResult, HostStatus, PlaybookResult, RunStatus
from fleetflow.secrets import MASK, RunSecrets, secret_variable
from fleetflow.tasks import _mask_result

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAA\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"  # noqa: E501
SECRETS = RunSecrets(SecretStr(KEY), SecretStr('pa"ss\\word'), SecretStr("vault-pass-123456"))


def test_values_cover_each_secret_and_each_long_key_line() -> None:
    values = SECRETS.values()
    assert 'pa"ss\\word' in values and "vault-pass-123456" in values
    assert "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAA" in values
    assert "AAAA" not in values  # short fragments would mask innocent text


def test_result_is_masked_everywhere_even_json_escaped() -> None:
    now = datetime.now(UTC)
    leak = 'echo pa"ss\\word and vault-pass-123456 and b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAA'
    host = HostResult(
        host="h1", status=HostStatus.FAILED, failed=1,
        failure=HostFailure(task="t", message=leak), outputs={"said": leak},
    )  # fmt: skip
    result = PlaybookResult(
        playbook="p", inventory="i", status=RunStatus.FAILED, hosts={"h1": host}, rc=2,
        started_at=now, finished_at=now, message=leak,
    )  # fmt: skip
    masked = _mask_result(result, SECRETS.values()).model_dump_json()
    assert "vault-pass" not in masked and "b3Blbn" not in masked and "ss\\\\word" not in masked
    assert masked.count(MASK) >= 9


def test_log_lines_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, "ff-test"),
        RunLog(logging.getLogger("ff-test"), SECRETS.values()) as logger,
    ):
        logger.info("%s | failed | %s", "h1", "vault-pass-123456 refused")
    assert caplog.messages == [f"h1 | failed | {MASK} refused"]


def test_secret_files_are_0600_and_prompts_never_touch_argv(tmp_path: Path) -> None:
    request = RunnerRequest(Path("p.yml"), Path("inv"), tmp_path, secrets=SECRETS)
    env = _secret_envvars(request, tmp_path)
    for name in ("ANSIBLE_PRIVATE_KEY_FILE", "ANSIBLE_VAULT_PASSWORD_FILE"):
        path = Path(env[name])
        assert path.parent == tmp_path / "secrets"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Path(env["ANSIBLE_PRIVATE_KEY_FILE"]).read_text() == KEY
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    assert _passwords(request) == {r"BECOME password.*:\s*?$": 'pa"ss\\word'}
    assert "--ask-become-pass" in (_cmdline(request) or "")
    assert "secrets=" not in repr(request) and "vault-pass" not in repr(request)


def test_secret_variable_names() -> None:
    assert secret_variable("lab-ssh-key") == "FLEETFLOW_SECRET_LAB_SSH_KEY"
