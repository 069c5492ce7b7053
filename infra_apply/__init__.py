"""infra-apply: .infra.yaml manifests -> DigitalOcean Terraform -> WireGuard mesh registry."""

__version__ = "0.1.0"
