"""Lab fleet: N isolated SSH hosts on this machine, for demos, tests and benchmarks."""

from fleetflow.lab._fleet import GROUPS, MAX_HOSTS, HostState, Lab, LabHost, lab_of_host
from fleetflow.lab._image import ensure_image, image_info, image_path

__all__ = [
    "GROUPS",
    "MAX_HOSTS",
    "HostState",
    "Lab",
    "LabHost",
    "ensure_image",
    "image_info",
    "image_path",
    "lab_of_host",
]
