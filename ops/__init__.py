"""Operator code that runs on a workstation, never in Azure: the command line (``python -m shared``
or ``python -m ops``), the compliance report, data-subject requests and replay. ``.funcignore``
leaves this package out of the deployment; its own requirements are in ``requirements-ops.txt``."""
