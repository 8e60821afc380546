"""fleetflow settings, read from ``FLEETFLOW_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["FleetflowSettings", "find_project_dir", "get_settings"]

_PROJECT_MARKERS = ("ansible.cfg", "playbooks")


def find_project_dir(start: Path | None = None) -> Path:
    """Return the nearest directory at or above `start` holding ansible.cfg and playbooks/.

    Falls back to the source checkout this package was installed from, so flows run by a
    worker from any working directory still find the repository's playbooks.
    """
    candidates = [start or Path.cwd()]
    candidates.append(Path(__file__).resolve().parents[2])
    for candidate in candidates:
        for directory in (candidate, *candidate.parents):
            if all((directory / marker).exists() for marker in _PROJECT_MARKERS):
                return directory
    return candidates[0]


class FleetflowSettings(BaseSettings):
    """Where fleetflow finds the project and keeps its state."""

    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_", extra="ignore")

    project_dir: Path = Field(
        default_factory=find_project_dir,
        description=(
            "Repository root holding ansible.cfg, playbooks/, inventory/ and roles/; default: "
            "the nearest such directory at or above the working directory, else the checkout "
            "fleetflow is installed from."
        ),
    )
    image_dir: Path = Field(
        default=Path("/var/cache/fleetflow/images"),
        description="Cache of lab base images (debootstrap roots), kept between labs.",
    )
    lab_dir: Path = Field(
        default=Path("/var/lib/fleetflow/labs"),
        description="State of running labs: host overlays, keys, known_hosts, logs.",
    )
    run_dir: Path | None = Field(
        default=None,
        description="Parent of per-run private data dirs (default: the system temp dir).",
    )
    fact_cache_dir: Path | None = Field(
        default=Path("/var/cache/fleetflow/facts"),
        description=(
            "Ansible facts cached per host between runs (jsonfile, mode 0700): a playbook that "
            "gathers facts skips gathering while the cache is fresh. Empty: gather every run."
        ),
    )
    fact_cache_seconds: int = Field(
        default=7200, ge=1, description="How long cached facts stay fresh, in seconds."
    )
    strategy: Literal["linear", "mitogen"] = Field(
        default="linear",
        description=(
            "Ansible strategy: linear, or mitogen (Mitogen's mitogen_linear: fewer round trips "
            "per task; falls back to linear, with a warning, when Mitogen cannot load)."
        ),
    )
    remote_guard: bool = Field(
        default=True,
        description=(
            "Mark, guard and fence the hosts of every run (docs/how-to/remote-work.md): what a "
            "run started on a host stops with it (end, cancel, timeout, controller death), and "
            "leftovers of earlier runs are stopped before a run works on a host."
        ),
    )
    ghost_policy: Literal["stop", "fail"] = Field(
        default="stop",
        description=(
            "What a run does with leftovers of earlier runs on a host: stop them (SIGTERM, then "
            "SIGKILL) and go on, or fail the host without touching it."
        ),
    )
    lab_ssh_port: int = Field(default=22, description="Port each lab host's sshd listens on.")
    lab_debian_suite: str = Field(default="bookworm", description="Debian suite of lab hosts.")
    database_url: SecretStr | None = Field(
        default=None,
        description=(
            "PostgreSQL URL of the Prefect server's database "
            "(postgresql://user:password@host:5432/fleetflow); unset: Prefect's SQLite."
        ),
    )
    api_auth: SecretStr | None = Field(
        default=None,
        description=(
            "The API's basic-auth credentials, user:password. Unset: `stack up` generates them "
            "into <stack_dir>/api-auth (mode 0600)."
        ),
    )
    stack_dir: Path = Field(
        default=Path("/var/lib/fleetflow/stack"),
        description="State and logs of the services `fleetflow stack up` starts.",
    )
    server_url: str | None = Field(
        default=None,
        description="URL of a Prefect server elsewhere: `stack up` then starts only workers.",
    )
    api_host: str = Field(
        default="127.0.0.1",
        description="Address the stack's access gateway binds (the Prefect server behind it "
        "listens on loopback only).",
    )
    api_port: int = Field(
        default=4200, ge=1, le=65535,
        description="Port of the stack's access gateway: the UI and the API.",
    )  # fmt: skip
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate (chain) the access gateway serves HTTPS with; "
        "set with FLEETFLOW_TLS_KEY.",
    )
    tls_key: Path | None = Field(
        default=None, description="PEM private key of FLEETFLOW_TLS_CERT (keep it mode 0600)."
    )

    git_remote: str | None = Field(
        default=None,
        description="The git remote deployments fetch their commit from (`fleetflow deploy`); "
        "unset: the repository `fleetflow deploy` runs in (file://, for workers on this "
        "machine).",
    )

    @field_validator("fact_cache_dir", mode="before")
    @classmethod
    def _empty_means_off(cls, value: object) -> object:
        return None if value == "" else value


def get_settings() -> FleetflowSettings:
    """Read the settings now (environment changes after import are honoured)."""
    return FleetflowSettings()
