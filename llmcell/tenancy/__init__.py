"""Tenancy: global quotas shared among gateways as leases, and fair queuing between tenants.
Pure decisions over snapshots, as the router's policies are; the gateway and the admin do the I/O."""
