"""Claude Code hook scripts (stdlib only: they run with `python3 -I -S`)."""
