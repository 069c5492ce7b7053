"""Registry: mesh-hosts.json, the mesh allocation record and the documents they live in."""
