"""Runtime: Terraform runs, working copies, the state dir, files, paths and locks."""
