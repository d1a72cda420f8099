"""The merchant's node: the Flower ClientApp, the task runtime that runs only the installed code, the node's
options, its model copy, the update it last sent and its check of what it adopts."""
