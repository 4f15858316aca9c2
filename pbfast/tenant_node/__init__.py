"""The tenant node: hosts open tenants, loads them on demand, evicts idle ones."""

from pbfast.tenant_node.app import TenantNodeApp

__all__ = ["TenantNodeApp"]
