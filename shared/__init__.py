"""The connector's code, shared by the function app's triggers and the operator's command line.

``__version__`` is the one place the version is written: the app is deployed as files, not
installed, so ``importlib.metadata`` cannot read pyproject's; pyproject reads this one
(``[tool.setuptools.dynamic]``) and the Defender client's User-Agent carries it.
"""

__version__ = "0.1.0"
