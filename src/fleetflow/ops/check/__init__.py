"""``fleetflow check``: the repository (inventories, playbooks, blackouts) and the
deployments in prefect.yaml, validated before anything runs."""
