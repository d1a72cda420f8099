"""The operator's run directory: its files, written atomically, and the chained log of its rounds. The server
writes it; the CLI, the auditors' report and a merchant reading a finished run read it."""
