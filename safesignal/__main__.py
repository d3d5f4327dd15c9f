from .cli_base import entry

entry()
