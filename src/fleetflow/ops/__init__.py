"""The operator's tools: the ``fleetflow`` command, repository and deployment checks,
``fleetflow deploy`` and run history."""
