"""The `r2t2` command."""
