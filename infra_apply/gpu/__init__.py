"""The on-demand GPU lifecycle's core (rule ``gpu_ondemand``: never a standing GPU).

- ``config``: the ``[gpu."NAME"]`` tables of infra-apply.toml as ``GpuSettings``;
- ``lease``: a lease and the pure decisions about it (new, renew, extend, keep or release);
- ``store``: each producer's leases, kept in the Terraform state of a tiny root of their own;
- ``probe``: the configured queue-depth command, bounded;
- ``lifecycle``: gpu up / down / reap over a store: lease, record, claim, release, end;
- ``status``: the rows ``gpu status`` prints.

Nothing here provisions a droplet: releasing one is a callback the command layer supplies.
"""
