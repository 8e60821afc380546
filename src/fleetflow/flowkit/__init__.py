"""What flows import besides ``run_playbook``: parameter types, sensors, change control,
the terminal summary."""
