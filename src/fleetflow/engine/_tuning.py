"""Speed settings fleetflow gives every ansible-playbook run (measured in bench/RESULTS.md).

ansible.cfg already turns on pipelining and one ControlPersist connection per host, and
the engine sizes forks to the targeted hosts. Here: a per-host fact cache (repeated runs
skip fact gathering; _factcache keeps each host's facts to the machine whose SSH key is
pinned for it) and, when asked for, Mitogen's strategy with a fallback to linear.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fleetflow.settings import FleetflowSettings

MITOGEN_STRATEGY = "mitogen_linear"


@dataclass(frozen=True)
class Tuning:
    """Ansible settings of one run, as environment variables for ansible-playbook."""

    fact_cache_dir: Path | None = None
    fact_cache_seconds: int = 7200
    strategy_plugins: Path | None = None  # Mitogen's strategy plugins; None: Ansible's linear

    @property
    def mitogen(self) -> bool:
        return self.strategy_plugins is not None

    def without_mitogen(self) -> Tuning:
        return replace(self, strategy_plugins=None)

    def envvars(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.fact_cache_dir is not None:
            env |= {
                "ANSIBLE_CACHE_PLUGIN": "jsonfile",
                "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(self.fact_cache_dir),
                "ANSIBLE_CACHE_PLUGIN_TIMEOUT": str(self.fact_cache_seconds),
            }
        if self.strategy_plugins is not None:
            env |= {
                "ANSIBLE_STRATEGY_PLUGINS": str(self.strategy_plugins),
                "ANSIBLE_STRATEGY": MITOGEN_STRATEGY,
            }
        return env


def tuning(settings: FleetflowSettings, log: logging.Logger | logging.LoggerAdapter[Any]) -> Tuning:
    """The run's tuning from the settings; what cannot be used is logged and left off."""
    cache = settings.fact_cache_dir
    if cache is not None:
        try:
            cache.mkdir(mode=0o700, parents=True, exist_ok=True)
            cache.chmod(0o700)  # facts describe hosts: only the controller's user reads them
        except OSError as exc:
            log.warning("fact cache %s unusable (%s): facts are gathered every run", cache, exc)
            cache = None
    plugins = None
    if settings.strategy == "mitogen":
        plugins, reason = mitogen_strategy_plugins()
        if plugins is None:
            log.warning("Mitogen cannot load (%s): running with the linear strategy", reason)
    return Tuning(cache, settings.fact_cache_seconds, plugins)


@functools.cache
def mitogen_strategy_plugins() -> tuple[Path | None, str]:
    """Mitogen's strategy plugin directory, or None and why it cannot be used.

    Found without importing it here (that would load Ansible into the flow run and trip
    over other import hooks); whether it runs with this ansible-core shows when
    ansible-playbook loads it, and the engine falls back to linear if it does not.
    """
    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None or not spec.submodule_search_locations:
        return None, "ansible_mitogen is not installed"
    plugins = Path(next(iter(spec.submodule_search_locations))) / "plugins" / "strategy"
    if not (plugins / f"{MITOGEN_STRATEGY}.py").is_file():
        return None, f"{plugins} has no {MITOGEN_STRATEGY} plugin"
    return plugins, ""
