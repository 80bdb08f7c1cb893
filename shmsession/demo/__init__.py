"""Watch the worker processes of a real gunicorn share one session store.

Run ``python -m shmsession.demo`` (or ``./run demo``). It

1. creates a store (a shared-memory segment with a unique name) and picks a free port on
   127.0.0.1;
2. starts ``gunicorn --workers 4 --worker-class sync`` serving :func:`app`, and waits until
   every worker answers;
3. plays a scripted browser: it logs in, then visits and fills a cart over a new TCP connection
   per request, so that different workers answer, and prints one line per request: the pid of
   the worker that answered and the session it saw; then it sends a burst of concurrent visits,
   which makes workers race on the same session;
4. checks that more than one worker answered, that no visit was lost, that the cart is exactly
   what was added, and that after logout the old cookie is anonymous;
5. stops gunicorn and removes the segment, in every case (also on Ctrl-C or SIGTERM).

Exit status: 0 when every check passed, 1 when a check failed, 2 when the demo could not run
(gunicorn did not start, the store could not be created...), 130 after Ctrl-C (SIGINT),
143 after SIGTERM.

``wsgi``: the app each worker runs (its routes); ``client``: the HTTP client and the
browser's cookie jar; ``script``: the scripted browser and its checks; ``run``: the demo's
arguments, gunicorn's start and stop, the clean-up.
"""

from .._process import free_port
from .._process import stop_server as stop_gunicorn
from .client import Answer, request
from .run import main
from .wsgi import ENV_NAME, STORE_SIZE, app

__all__ = [
    "Answer",
    "ENV_NAME",
    "STORE_SIZE",
    "app",
    "free_port",
    "main",
    "request",
    "stop_gunicorn",
]
