"""The run path: one playbook run from request to per-host result.

``run.py`` is the Prefect task (``run_playbook``) and everything below it is Prefect-free:
``inventory`` resolves and validates, ``_attempts`` runs and retries, ``_runner`` is the
one module that imports ansible_runner, ``_collector`` turns Ansible's events into host
results, ``publish`` writes what a run tells the outside (events, artifacts). Nothing in
here imports ``fleetflow.flowkit``, ``fleetflow.ops``, ``fleetflow.stack`` or
``fleetflow.launcher``.
"""
