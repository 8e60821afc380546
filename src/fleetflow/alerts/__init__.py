"""Alerts: automations kept in the repository, applied to the server; alert channels."""

from fleetflow.alerts._apply import PREFIX, Plan, apply_plan, load_specs, plan
from fleetflow.alerts._channels import AlertSettings, channel_blocks, save_channels
from fleetflow.alerts.blocks import SMTPEmail

__all__ = [
    "PREFIX",
    "AlertSettings",
    "Plan",
    "SMTPEmail",
    "apply_plan",
    "channel_blocks",
    "load_specs",
    "plan",
    "save_channels",
]
