"""Notification blocks Prefect lacks: email over SMTP, built on Apprise (Prefect ships it).

Registered with Prefect through the ``prefect.collections`` entry point, so the server
(which sends automation notifications) and the UI know the block type.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote, urlencode

from prefect.blocks.notifications import AbstractAppriseNotificationBlock
from pydantic import Field, SecretStr

__all__ = ["SMTPEmail"]

_MODES = {
    "starttls": ("mailtos", "starttls"),
    "ssl": ("mailtos", "ssl"),
    "none": ("mailto", "insecure"),
}


class SMTPEmail(AbstractAppriseNotificationBlock):
    """Send notifications as email through any SMTP server."""

    _block_type_name = "SMTP Email"
    _block_type_slug = "fleetflow-smtp-email"
    _description = "Email over SMTP (STARTTLS, SSL or plain on a trusted network), via Apprise."

    smtp_host: str = Field(description="SMTP server host name or address.")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = Field(
        default="starttls", description="'none' only for a relay on a trusted network."
    )
    username: str | None = Field(default=None, description="SMTP login, if the server wants one.")
    password: SecretStr | None = Field(default=None)
    from_address: str = Field(description="Sender address.")
    to_addresses: list[str] = Field(min_length=1, description="Recipients.")

    def block_initialization(self) -> None:
        self._start_apprise_client(self.apprise_url())

    def apprise_url(self) -> SecretStr:
        scheme, mode = _MODES[self.security]
        login = ""
        if self.username:
            secret = self.password.get_secret_value() if self.password else ""
            login = f"{quote(self.username, safe='')}:{quote(secret, safe='')}@"
        query = urlencode(
            {
                "smtp": self.smtp_host,
                "from": self.from_address,
                "to": ",".join(self.to_addresses),
                "mode": mode,
            }
        )
        return SecretStr(f"{scheme}://{login}{self.smtp_host}:{self.smtp_port}?{query}")
