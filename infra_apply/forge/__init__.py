"""Forge: the pull-request and issue comment APIs (Forgejo, GitHub) and the notification webhook."""
