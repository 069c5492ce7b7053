"""Render: the model as one Terraform root module per producer (HCL through hcl.py)."""
