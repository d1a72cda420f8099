"""Keep every fedshop process offline: no telemetry, no update checks, no usage stats.

Flower and Ray phone home unless told not to; fedshop runs where nothing outside may be reached.
``apply()`` sets the switches in ``os.environ`` so they also reach every subprocess we start
(SuperLink, SuperNodes, Ray workers).
"""

import os

OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}


def apply() -> None:
    """Set the offline switches unless the operator set them explicitly."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
