"""The cluster's contract between control plane, tenant nodes and gateways: header names and what they mean
(:mod:`pbfast.cluster.wire`), the tenant record (:mod:`pbfast.cluster.tenant_record`), and what a heartbeat
carries each way (:mod:`pbfast.cluster.heartbeat`)."""
