"""What flows import besides ``run_playbook``: parameter types (and ``retry_policy``), sensors,
change control, the terminal summary and markdown tables for artifacts."""
