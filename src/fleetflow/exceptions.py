"""Every error fleetflow raises on purpose.

::

    FleetflowError
    ├── ConfigurationError        bad input, found before any host is touched
    │   ├── InventoryError          unknown environment, unparsable inventory
    │   ├── PlaybookError           unknown playbook, syntax error
    │   ├── NoHostsMatched          the limit/pattern selects no host
    │   └── CheckoutError           the deployed commit or ref could not be fetched or is refused
    ├── LabError                  the lab fleet could not be built or changed
    │   └── PrerequisiteMissing     not root, missing tool (says how to get it)
    ├── StackError                the Prefect server/workers could not be started or stopped
    ├── AccessError               a user/audit change or lookup was refused or failed
    ├── HostLockTimeout           the hosts stayed locked by other runs past the lock timeout
    ├── InBlackout                a blackout window is open over the hosts; nothing was run
    ├── SensorTimeout             a sensor's condition was not met within its timeout
    ├── TimeLimitReached          the run's time limit passed before a playbook could start
    ├── AlertError                automations or alert channels could not be applied
    ├── ApprovalError             the run could not pause for an approval; nothing was applied
    │   └── ContentChanged          the content changed between plan and apply; nothing applied
    ├── RolloutStopped            a batch failed its deploy or health check; later ones untouched
    └── PlaybookRunError          the playbook ran and did not succeed; carries `.result`
        ├── PlaybookFailed          failed/unreachable hosts above max_fail_percentage
        ├── PlaybookTimedOut        the run exceeded its timeout and was killed
        └── PlaybookCanceled        the run was canceled and its processes killed

`PlaybookRunError` subclasses pickle with their result (and `InBlackout` with the time
its windows close) so Prefect can store them as task state data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    from fleetflow.results import PlaybookResult

__all__ = [
    "AccessError",
    "AlertError",
    "ApprovalError",
    "CheckoutError",
    "ConfigurationError",
    "ContentChanged",
    "FleetflowError",
    "HostLockTimeout",
    "InBlackout",
    "InventoryError",
    "LabError",
    "NoHostsMatched",
    "PlaybookCanceled",
    "PlaybookError",
    "PlaybookFailed",
    "PlaybookRunError",
    "PlaybookTimedOut",
    "PrerequisiteMissing",
    "RolloutStopped",
    "SensorTimeout",
    "StackError",
    "TimeLimitReached",
]


class FleetflowError(Exception):
    """Base of every error fleetflow raises on purpose."""


class ConfigurationError(FleetflowError):
    """The request is wrong; nothing was run on any host."""


class InventoryError(ConfigurationError):
    """The inventory does not exist or Ansible cannot parse it."""


class PlaybookError(ConfigurationError):
    """The playbook does not exist or does not pass Ansible's syntax check."""


class NoHostsMatched(ConfigurationError):
    """The limit (or the plays' host patterns) selects no host of the inventory."""


class CheckoutError(ConfigurationError):
    """The content a deployment runs could not be fetched (no such commit or ref on the git
    remote, git failing) or the ref asked for is not allowed; nothing ran on any host."""


class LabError(FleetflowError):
    """The lab fleet could not be created, changed or removed."""


class PrerequisiteMissing(LabError):
    """Something the lab needs from the machine is missing; the message says how to get it."""


class StackError(FleetflowError):
    """The stack (Prefect server, database, workers) could not be started, changed or stopped."""


class AccessError(FleetflowError):
    """The access store (users, roles, audit, lockouts) refused a change or could not be
    reached; the message says which user or what to fix, never a password."""


class AlertError(FleetflowError):
    """An automation file is invalid, or automations/channels could not be applied."""


class ApprovalError(FleetflowError):
    """The run could not pause to wait for an approval (it is not a flow run, or the server
    refused the pause); nothing was applied."""


class ContentChanged(ApprovalError):
    """The playbook, roles, scripts or inventory differ from what the approved plan was
    made with; the change was not applied."""


class RolloutStopped(FleetflowError):
    """A batch of a rolling change failed its deploy or its health check: the rollout stopped
    there and later batches were not touched. The run's report artifact shows each batch."""


class HostLockTimeout(FleetflowError):
    """Other runs held some of the target hosts longer than the lock timeout; nothing ran."""


class SensorTimeout(FleetflowError):
    """What a sensor waited for did not happen in time; the message says what, where, how
    long, and what was last observed (e.g. "connection refused", "HTTP 503")."""


class InBlackout(FleetflowError):
    """A blackout window is open over some of the hosts (policy fail, or waited too long);
    nothing was run. `until` is when no window covers those hosts any more.
    """

    def __init__(self, message: str, until: datetime | None = None) -> None:
        super().__init__(message)
        self.until = until

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.until))


class PlaybookRunError(FleetflowError):
    """The playbook ran but did not succeed. `result` holds what happened on every host."""

    def __init__(self, message: str, result: PlaybookResult) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.result))


class PlaybookFailed(PlaybookRunError):
    """Failed or unreachable hosts exceeded `max_fail_percentage`."""


class TimeLimitReached(FleetflowError):
    """The run's time limit (a deployment's `time_limit`) passed before a playbook started;
    that playbook and the rest were not run."""


class PlaybookTimedOut(PlaybookRunError):
    """The run exceeded its timeout; its processes were killed."""


class PlaybookCanceled(PlaybookRunError):
    """The run was canceled; its processes were killed."""
