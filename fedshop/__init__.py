"""fedshop: federated recommendation and pricing for merchants.

This package holds what ties the federation together for people: the CLI, the run settings and the
in-process simulation. The federation's parts live in the top-level packages ``server``, ``client``,
``models``, ``privacy`` and ``explain``.
"""

from fedshop import offline as _offline

_offline.apply()
