"""The run path: one playbook run from request to per-host result.

``run.py`` holds the Prefect task (``run_playbook``) and builds one ``RunRequest``
(``request.py``), handed down unchanged: ``inventory.preflight`` validates it with Ansible,
``_attempts`` runs and retries failed hosts only through ``_runner`` (the one module that
imports ansible_runner; how Ansible is called lives in ``_ansible``), ``_collector`` turns
Ansible's events into host results and ``publish`` writes what a run tells the outside
(artifacts, their text in ``_artifacts``; events, their payload model); ``flowrun`` what
it tells its flow run (host tags, a quiet log for expected failures). Prefect is imported
only by ``run``, ``publish``, ``flowrun``, ``_locks`` and the Secret block lookup in
``secrets``, so unit tests drive the rest with a fake runner. Nothing in here imports
``fleetflow.flowkit``, ``fleetflow.ops``, ``fleetflow.stack`` or ``fleetflow.launcher``.
"""
