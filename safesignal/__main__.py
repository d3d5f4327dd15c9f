from safesignal.cli.entry import entry

entry()
