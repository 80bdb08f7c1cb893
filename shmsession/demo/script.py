"""The demo's script: a browser logs in, visits and fills a cart over a new connection per
request, then a burst of concurrent visits makes workers race on its session; every answer
is printed as a table row (which worker answered, what session it saw), and every check as
it is made.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional

from .. import SessionNotFound, SessionStorage
from .client import REQUEST_TIMEOUT, Answer, Browser, DemoError, request
from .wsgi import COOKIE_NAME, decode

CART_ITEMS = ("apple", "bread", "cheese", "dates", "eggs", "figs", "grapes", "honey", "ice")


def say(text: str = "") -> None:
    print(text, flush=True)  # flush: the user watches it live, even through a pipe


_ROW = "{:>3}  {:<24}  {:>6}  {:>10}  {:>6}  {}"
CART_WIDTH = 40


def _cart_text(cart: object, width: int = CART_WIDTH) -> str:
    """The cart as ``3 [apple, bread, cheese]``; the oldest items give way to ``...`` when
    it would be wider than ``width`` characters."""
    if not isinstance(cart, list) or not cart:
        return "0 []"
    items = [str(item) for item in cart]
    for shown in range(len(items), 1, -1):
        listed = ", ".join((["..."] if shown < len(items) else []) + items[-shown:])
        if len(f"{len(items)} [{listed}]") <= width:
            return f"{len(items)} [{listed}]"
    return f"{len(items)} [{'..., ' if len(items) > 1 else ''}{items[-1]}]"


def _row(number: object, target: str, answer: Optional[Answer]) -> str:
    if answer is None:
        return _ROW.format(number, target, "-", "-", "-", "-")
    session = answer.session
    visits = session.get("visits", "-")
    cart = _cart_text(session.get("cart")) if session else "-"
    if answer.body.get("anonymous") is True:
        visits, cart = "-", "(anonymous)"
    return _ROW.format(number, target, answer.status, answer.pid or "-", visits, cart)


@dataclass
class Checks:
    """The demo's verdicts, printed as they are made."""

    failed: List[str] = field(default_factory=list)

    def check(self, ok: bool, text: str) -> bool:
        say(f"  [{'ok' if ok else 'FAIL'}] {text}")
        if not ok:
            self.failed.append(text)
        return ok


def _burst(port: int, cookie: str, clients: int, visits_each: int) -> List[Optional[Answer]]:
    """``clients`` threads each send ``visits_each`` visits at once; None marks a dead request."""
    results: List[List[Optional[Answer]]] = [[] for _ in range(clients)]
    start = threading.Event()

    def client(out: List[Optional[Answer]]) -> None:
        start.wait(REQUEST_TIMEOUT)
        for _ in range(visits_each):
            try:
                out.append(request(port, "GET", "/visit", cookie))
            except (OSError, DemoError):
                out.append(None)

    threads = [threading.Thread(target=client, args=(out,), daemon=True) for out in results]
    for thread in threads:
        thread.start()
    start.set()  # release them together, so that their visits overlap
    deadline = time.monotonic() + REQUEST_TIMEOUT * (visits_each + 1)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    answers = [answer for out in results for answer in out]
    # A thread still running past the deadline counts its missing visits as dead requests.
    return answers + [None] * (clients * visits_each - len(answers))


def run_script(
    port: int, store: SessionStorage, requests: int, clients: int, visits_each: int
) -> List[str]:
    """Play the scripted browser against the server on ``port``; returns the failed checks.

    ``store`` is the demo's own handle on the segment, used to look at the session from a
    process that is not a worker.
    """
    checks = Checks()
    browser = Browser(port)
    pids: List[int] = []

    def note(answer: Answer) -> Answer:
        if answer.pid is not None:
            pids.append(answer.pid)
        return answer

    say("Every request below goes over a new TCP connection; any of the workers may take it.")
    say()
    header = _ROW.format("#", "request", "status", "worker pid", "visits", "cart")
    rule = "-" * (len(header) - len("cart") + CART_WIDTH)
    say(header)
    say(rule)

    login = note(browser.send("POST", "/login?user=alice"))
    say(_row(1, "POST /login?user=alice", login))
    sid = browser.cookie(COOKIE_NAME)
    if login.status != 200 or sid is None:
        say()
        checks.check(False, f"logging in gave {login.status} {login.body}, and no cookie")
        return checks.failed
    cookie = f"{COOKIE_NAME}={sid}"

    visits_sent = 0
    expected_cart: List[str] = []
    unexpected: List[str] = []  # requests whose answer was not the one a shared session gives
    for number in range(2, requests + 2):
        if number % 4 == 0:
            item = CART_ITEMS[len(expected_cart) % len(CART_ITEMS)]
            expected_cart.append(item)
            target, method = f"/cart?item={item}", "POST"
        else:
            visits_sent += 1
            target, method = "/visit", "GET"
        answer = note(browser.send(method, target))
        say(_row(number, f"{method} {target}", answer))
        # Requests go one at a time, so each answer must show exactly the state so far.
        if (
            answer.status != 200
            or answer.session.get("visits") != visits_sent
            or answer.session.get("cart") != expected_cart
        ):
            unexpected.append(f"#{number} {method} {target} -> {answer.status} {answer.body}")
    say()
    checks.check(
        not unexpected,
        f"each of the {requests} answers showed every earlier visit and cart item"
        + "".join(f"\n         {line}" for line in unexpected[:5]),
    )

    say()
    say(
        f"Concurrent burst: {clients} clients send {visits_each} visits each at the same time, "
        "so workers race to update the same session."
    )
    burst = _burst(port, cookie, clients, visits_each)
    for reply in burst:
        if reply is not None:
            note(reply)
    ok_burst = [reply for reply in burst if reply is not None and reply.status == 200]
    retries = sum(int(reply.body.get("retries", 0)) for reply in ok_burst)
    burst_pids = {reply.pid for reply in ok_burst}
    say(
        f"  {len(ok_burst)} of {len(burst)} answered 200, by {len(burst_pids)} worker(s); "
        f"{retries} compare-and-set retr{'y' if retries == 1 else 'ies'} resolved conflicts"
    )
    visits_sent += len(burst)
    checks.check(len(ok_burst) == len(burst), f"all {len(burst)} concurrent visits answered 200")

    # The demo process itself is not a worker: it reads the session straight from the segment.
    try:
        stored = decode(store.read(sid))
    except (SessionNotFound, ValueError) as exc:
        raise DemoError(f"the session is not in the store after the requests: {exc!r}") from None
    distinct = sorted(set(pids))
    say()
    say("Summary (session read by the demo process straight from shared memory):")
    say(f"  session id (cookie)  : {sid[:12]}... ({len(sid)} characters)")
    say(
        f"  session              : user={stored['user']} visits={stored['visits']} "
        f"cart={stored['cart']}"
    )
    say(f"  distinct worker pids : {len(distinct)}  ({', '.join(map(str, distinct))})")
    say(f"  final visits         : {stored['visits']} == {visits_sent} visit requests")
    checks.check(len(distinct) >= 2, f"{len(distinct)} distinct workers answered (need at least 2)")
    checks.check(
        stored["visits"] == visits_sent,
        f"no visit lost: {stored['visits']} counted for {visits_sent} sent",
    )
    checks.check(
        stored["cart"] == expected_cart,
        f"cart is exactly the {len(expected_cart)} items added, in order",
    )

    say()
    say(header)
    say(rule)
    number = requests + 2
    logout = note(browser.send("POST", "/logout"))
    say(_row(number, "POST /logout", logout))
    replay = request(port, "GET", "/visit", cookie)  # the cookie the browser just dropped
    say(_row(number + 1, "GET /visit (old cookie)", replay))
    say()
    checks.check(
        logout.status == 200 and logout.body.get("logged_out") is True
        and browser.cookie(COOKIE_NAME) is None,
        "logout invalidated the session and cleared the cookie",
    )
    checks.check(
        replay.status == 401 and replay.body.get("anonymous") is True,
        f"replaying the old cookie is anonymous ({replay.status})",
    )
    checks.check(store.get(sid) is None, "the session is gone from shared memory")
    return checks.failed
