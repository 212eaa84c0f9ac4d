"""The `mlops` command."""
