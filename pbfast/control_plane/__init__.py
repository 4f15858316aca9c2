"""The control plane: tenant and node registry, quotas, placement, ``/api/cp/...``."""

from pbfast.control_plane.app import ControlPlaneApp

__all__ = ["ControlPlaneApp"]
