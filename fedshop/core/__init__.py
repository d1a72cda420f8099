"""The ground floor: run settings, the message protocol and file helpers. Imports nothing of fedshop and
changes nothing on import, so every layer above may use it."""
