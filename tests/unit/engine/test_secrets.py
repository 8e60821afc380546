"""Secret handling without a server: masking, files, prompts."""

from __future__ import annotations

import base64
import json
import logging
import stat
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from fleetflow.engine._runlog import RunLog
from fleetflow.engine._runner import _cmdline, _passwords, _secret_envvars
from fleetflow.engine.publish import mask_result as _mask_result
from fleetflow.engine.request import RunRequest
from fleetflow.engine.secrets import MASK, Masker, RunSecrets, mask, masked_forms, secret_variable
from fleetflow.results import HostFailure, HostResult, HostStatus, PlaybookResult, RunStatus

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


def test_log_lines_are_masked_in_every_form(caplog: pytest.LogCaptureFixture) -> None:
    """Issue #18: an SSH error repeated a vaulted value in lower case, unmasked."""
    forms = _encodings("Vault-Pass-123456")
    with (
        caplog.at_level(logging.INFO, "ff-test"),
        RunLog(logging.getLogger("ff-test"), ["Vault-Pass-123456"]) as logger,
    ):
        for form in forms:
            logger.info("h1 | said %s.", form)
    lines = "\n".join(caplog.messages).splitlines()
    assert lines == [f"h1 | said {MASK}."] * len(forms)


def test_secret_files_are_0600_and_prompts_never_touch_argv(tmp_path: Path) -> None:
    request = RunRequest(Path("p.yml"), Path("inv"), tmp_path, secrets=SECRETS)
    env = _secret_envvars(request, tmp_path)
    for name in ("ANSIBLE_PRIVATE_KEY_FILE", "ANSIBLE_VAULT_PASSWORD_FILE"):
        path = Path(env[name])
        assert path.parent == tmp_path / "secrets"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Path(env["ANSIBLE_PRIVATE_KEY_FILE"]).read_text() == KEY
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    assert _passwords(request) == {r"BECOME password.*:\s*?$": 'pa"ss\\word'}
    assert "--ask-become-pass" in (_cmdline(request, None) or "")
    assert "secrets=" not in repr(request) and "vault-pass" not in repr(request)


def test_secret_variable_names() -> None:
    assert secret_variable("lab-ssh-key") == "FLEETFLOW_SECRET_LAB_SSH_KEY"


def _encodings(secret: str) -> list[str]:
    raw = secret.encode()
    return [
        secret, secret.lower(), secret.upper(), base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="), urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret), raw.hex(), raw.hex().upper(), json.dumps(secret)[1:-1],
    ]  # fmt: skip


@pytest.mark.parametrize("secret", ["S3cr3t-Pa55", 'S3cr3t-Pa55/"x y'])
def test_a_secret_is_masked_in_its_transformed_forms(secret: str) -> None:
    """Issue #18: `| b64encode`, `| lower` and friends carried a secret past the mask."""
    forms = _encodings(secret)
    assert set(forms) <= set(masked_forms([secret]))
    for form in forms:
        assert mask(f"before {form}after", [secret]) == f"before {MASK}after", form
    assert mask(f"said {secret.swapcase()} twice", [secret]) == f"said {MASK} twice"


def test_short_values_are_masked_only_as_they_are() -> None:
    assert masked_forms(["abc", "", "  "]) == ["abc"]
    assert mask("short abc ABC YWJj 616263", ["abc"]) == f"short {MASK} ABC YWJj 616263"


def test_longer_forms_go_first_and_key_lines_are_forms_of_their_own() -> None:
    forms = masked_forms([KEY])
    assert forms == sorted(forms, key=len, reverse=True) and len(forms) == len(set(forms))
    line = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAA"
    assert {line, line.lower(), base64.b64encode(line.encode()).decode()} <= set(forms)
    assert "AAAA" not in forms
    # One secret inside another: the longer is masked whole, no tail of it is left.
    assert mask("x vault-pass-123456-more y", ["vault-pass-123456", "vault-pass-123456-more"]) == (
        f"x {MASK} y"
    )


def test_a_masker_never_shows_its_values() -> None:
    masker = Masker(SECRETS.values())
    assert "vault" not in repr(masker) and masker("no secret here") == "no secret here"


def test_masking_a_megabyte_with_fifty_secrets_is_quick() -> None:
    words = ["ok:", "changed:", "[web01]", "TASK", "=>", '{"msg":', "failed", "PLAY", "RECAP"]
    big = "\n".join(" ".join(words[(n + k) % len(words)] for k in range(12)) for n in range(14000))
    secrets = [f"Secret-{n:02d}-{'xYz' * (n % 5)}/value" for n in range(50)]
    assert len(big) > 10**6
    started = time.monotonic()
    masked = mask(f"{big} {base64.b64encode(secrets[7].encode()).decode()}", secrets)
    assert masked == f"{big} {MASK}"
    assert time.monotonic() - started < 2


def test_masking_a_result_keeps_it_valid_whatever_the_secret() -> None:
    """A secret starting with "n" right after a newline: masking the JSON text would have
    left a dangling backslash and broken the document."""
    from datetime import UTC, datetime

    from fleetflow.engine.publish import mask_result as _mask_result
    from fleetflow.results import PlaybookResult, RunStatus

    now = datetime.now(UTC)
    result = PlaybookResult(
        playbook="p.yml", inventory="lab", status=RunStatus.FAILED, hosts={}, attempts=1, rc=2,
        started_at=now, finished_at=now, message="failed:\nnightly-Secret-42 was refused",
    )  # fmt: skip
    masked = _mask_result(result, ["nightly-Secret-42"])
    assert masked.message == "failed:\n******** was refused"
