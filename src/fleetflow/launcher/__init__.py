"""The warm launcher (``server``, started as ``python -m fleetflow.launcher.server``) and
``fleetflow-engine`` (``client``, the command process workers run). Kept free of
imports: the client is on every run's start-up path."""
