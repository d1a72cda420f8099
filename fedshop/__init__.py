"""fedshop: federated recommendation and pricing for merchants.

One installed name: the federation's parts are its subpackages (``fedshop.core``, ``fedshop.models``,
``fedshop.privacy``, ``fedshop.client``, ``fedshop.explain``, ``fedshop.rundir``, ``fedshop.server``)
and the tools people use (``fedshop.cli``, ``fedshop.service``, ``fedshop.simulation``,
``fedshop.operations``). Importing it changes nothing: no environment, no logging, no I/O.
"""
