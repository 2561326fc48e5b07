"""The `sandboxd` command line for people: API client commands, `check` and `config show`.

`daemon/cli.py` is the entry point (argparse, environment); the modules here receive what
they need as arguments and never read `os.environ`.
"""
