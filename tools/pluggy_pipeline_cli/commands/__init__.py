"""The `pluggy-pipeline` subcommands; `cli.py` assembles them."""
