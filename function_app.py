"""The Function App: one FunctionApp, one blueprint per function family, and the log
record factory that keeps sender text from forging log lines. Nothing else here.

Importing this module must never touch the network or import a heavy SDK: an import error
makes every function vanish at indexing, and import time is cold-start time.
"""

import azure.functions as func

from shared import logsafe
from shared.functions import forward, health, hunting, ingest

logsafe.install()  # sender-controlled text can never forge a log line
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(ingest.bp)
app.register_functions(forward.bp)
app.register_functions(health.bp)
app.register_functions(hunting.bp)
