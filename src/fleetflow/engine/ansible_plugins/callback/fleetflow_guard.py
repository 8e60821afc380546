"""fleetflow's remote guard, put into every play of a run (see fleetflow/engine/_guard.py).

Loaded by ansible-playbook from ANSIBLE_CALLBACK_PLUGINS (needs no enabling); does nothing
unless FLEETFLOW_GUARD_TOKEN is set. At each play's start, before the play is compiled:
- the play's `environment` gets FLEETFLOW_RUN=<token> first, so every task inherits it
  (a task or block may override it: FLEETFLOW_RUN "" marks work that must outlive the run);
  Ansible puts it on the module's command line inside su/sudo and with pipelining;
- a first pre_task runs the host script's `fence` (raw, tags: always); with become when any
  task of the play may become another user, so that its guard can stop their processes.
"""

from __future__ import annotations

import base64
import os
import shlex
from pathlib import Path
from typing import Any

from ansible import context
from ansible.playbook.block import Block
from ansible.plugins.callback import CallbackBase
from ansible.template import trust_as_template

# Both equal to fleetflow.engine._guard's (a test checks): this file imports nothing of ours.
TASK_NAME = "fleetflow: fence this host and guard the run's processes"
_CONNECTIONS = ["ssh", "smart", "paramiko", "paramiko_ssh"]
_SCRIPT = Path(__file__).resolve().parents[2] / "_remote_guard.py"


def _bootstrap() -> str:
    """`python3 -c` code running the host script: base64, so no templating touches it."""
    encoded = base64.b64encode(_SCRIPT.read_bytes()).decode()
    return f"import base64;exec(base64.b64decode('{encoded}'))"


def _plays(play: Any) -> list[Any]:
    """The play and the play objects its blocks and roles point to: the play a callback
    gets is a copy, and blocks loaded with the play still refer to the original."""
    found = {id(play): play}
    blocks = [*play.pre_tasks, *play.tasks, *play.post_tasks, *play.handlers]
    for owner in [*blocks, *play.roles]:
        other = getattr(owner, "_play", None)
        if other is not None:
            found.setdefault(id(other), other)
    return list(found.values())


_BECOME_KEYWORDS = ("become_method", "become_user", "become_flags", "become_exe")


def _set(item: Any, name: str) -> Any:
    """The keyword as written on this block or task, or None (Ansible's Sentinel: unset)."""
    value = getattr(item, f"_{name}", None)
    return None if value is None or isinstance(value, type) else value


def _become_of(item: Any, inherited: dict[str, Any]) -> dict[str, Any] | None:
    """The become keywords of the first block or task in `item` that becomes (with those
    of the blocks around it), or None if none does."""
    here = inherited | {k: v for k in _BECOME_KEYWORDS if (v := _set(item, k)) is not None}
    if _set(item, "become") not in (None, False):
        return {"become": True, **here}
    for part in ("block", "rescue", "always"):
        for child in getattr(item, part, None) or []:
            if (found := _become_of(child, here)) is not None:
                return found
    return None


def _guard_become(play: Any) -> dict[str, Any]:
    """Keywords for the fence task: when a task of the play may run as another user, its
    guard runs as that user too (else it could not stop them); the first such task's
    become method and user. Tasks of dynamic includes are not seen."""
    if context.CLIARGS.get("become") or _set(play, "become"):
        return {"become": True}
    blocks = [*play.pre_tasks, *play.tasks, *play.post_tasks, *play.handlers]
    for role in play.roles:
        blocks += [*getattr(role, "_task_blocks", []), *getattr(role, "_handler_blocks", [])]
    for block in blocks:
        if (found := _become_of(block, {})) is not None:
            return found
    return {}


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "fleetflow_guard"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self) -> None:
        super().__init__()
        self._token = os.environ.get("FLEETFLOW_GUARD_TOKEN", "")
        self._policy = os.environ.get("FLEETFLOW_GUARD_POLICY", "stop")
        self._watch = os.environ.get("FLEETFLOW_GUARD_WATCH", "1")
        self._code = _bootstrap() if self._token else ""

    def v2_playbook_on_play_start(self, play: Any) -> None:
        if not self._token:
            return
        marker = {"FLEETFLOW_RUN": self._token}
        for each in _plays(play):
            if not each.environment or each.environment[0] != marker:
                each.environment = [marker, *(each.environment or [])]
        argv = ["python3", "-c", self._code, "fence", self._token, self._policy, self._watch]
        # raw: one python3 on the host, no module wrapper around it (half the task's cost).
        task = {
            "name": TASK_NAME,
            "ansible.builtin.raw": shlex.join(argv),
            "changed_when": False,
            "tags": ["always"],
            **_guard_become(play),
            # Our own expression (2.19+ templates only what is marked trusted).
            "when": trust_as_template(f"(ansible_connection | default('ssh')) in {_CONNECTIONS}"),
        }
        block = Block.load(
            {"block": [task]}, play=play, variable_manager=play.get_variable_manager(),
            loader=play._loader,
        )  # fmt: skip
        play.pre_tasks = [block, *play.pre_tasks]
