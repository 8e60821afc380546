"""Alert channels: notification blocks made from the environment, found by name.

Credentials never live in the repository: `fleetflow automations apply` builds each
channel's block from FLEETFLOW_ALERT_* variables when they are set (webhook URLs go
into the block's encrypted secrets), or uses a block of that name made in the UI.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from prefect.blocks.core import Block
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import SyncPrefectClient
from prefect.exceptions import ObjectNotFound
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetflow.alerts.blocks import SMTPEmail
from fleetflow.exceptions import AlertError

__all__ = ["AlertSettings", "channel_blocks", "resolve_channels", "save_channels"]

WEBHOOK, SLACK, EMAIL = "fleetflow-webhook", "fleetflow-slack", "fleetflow-email"


class AlertSettings(BaseSettings):
    """Where alerts go; every field is optional and a channel exists only when set."""

    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_ALERT_", extra="ignore")

    webhook_url: SecretStr | None = Field(default=None, description="Generic JSON webhook.")
    slack_url: SecretStr | None = Field(default=None, description="Slack-compatible webhook.")
    smtp_host: str | None = Field(
        default=None, description="SMTP server for email alerts (with email_to: the channel)."
    )
    smtp_port: int = Field(default=587, description="Port of the SMTP server.")
    smtp_security: Literal["starttls", "ssl", "none"] = Field(
        default="starttls", description="How the SMTP connection is encrypted."
    )
    smtp_user: str | None = Field(default=None, description="SMTP login; unset: none.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    email_from: str = Field(default="fleetflow@localhost", description="Sender of alert email.")
    email_to: str | None = Field(default=None, description="Comma-separated recipients.")


def _webhook(name: str, url: SecretStr, payload: dict[str, str]) -> Block:
    return CustomWebhookNotificationBlock(
        name=name,
        url="{{webhook_url}}",
        method="POST",
        json_data=payload,
        secrets={"webhook_url": url.get_secret_value()},
    )


def channel_blocks(settings: AlertSettings) -> dict[str, Block]:
    """The channel blocks the environment describes, by block document name."""
    blocks: dict[str, Block] = {}
    if settings.webhook_url:
        payload = {"source": "fleetflow", "subject": "{{subject}}", "body": "{{body}}"}
        blocks[WEBHOOK] = _webhook(WEBHOOK, settings.webhook_url, payload)
    if settings.slack_url:
        blocks[SLACK] = _webhook(SLACK, settings.slack_url, {"text": "*{{subject}}*\n{{body}}"})
    if settings.smtp_host and settings.email_to:
        blocks[EMAIL] = SMTPEmail(
            smtp_host=settings.smtp_host,
            smtp_port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_user,
            password=settings.smtp_password,
            from_address=settings.email_from,
            to_addresses=[a.strip() for a in settings.email_to.split(",") if a.strip()],
        )
    return blocks


def resolve_channels(client: SyncPrefectClient, names: list[str]) -> dict[str, UUID]:
    """Block document ids of the channels that exist (any block type), by name."""
    found: dict[str, UUID] = {}
    documents = client.read_block_documents()
    by_name = {doc.name: doc.id for doc in documents if doc.name}
    for name in names:
        if name in by_name:
            found[name] = by_name[name]
    return found


def save_channels(blocks: dict[str, Block]) -> None:
    for name, block in blocks.items():
        try:
            block.save(name, overwrite=True)
        except (ObjectNotFound, ValueError) as exc:
            raise AlertError(f"cannot save alert channel {name}: {exc}") from exc
