"""A client that hangs up on a long answer, and a check that the model's replica then stops generating.

Shared by the hang-up tests of the ensemble and of a remote model. Import it as `from hang_up import ...`."""
import json
import os
import socket
import time
from urllib.parse import urlsplit

import httpx

from router.serving.local_ensemble import wait_for

# answers the tiny model writes to max_tokens at temperature 0, mostly: in one CI run the streamed list, asked right
# after the same prompt unstreamed, ended after about a second of generating, so there are three to try in turn
LONG_ANSWERS = ["Write the numbers from 1 to 2000, separated by commas.",
                "Count from 1 to 3000 in words, one number per line.",
                "Write the word hello 2000 times, separated by spaces."]


def cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def replica_pid(ensemble, deployment: str, app: str = "router") -> int:
    apps = httpx.get(f"{ensemble.dashboard}/api/serve/applications/", timeout=30).json()["applications"]
    return next(r["pid"] for r in apps[app]["deployments"][deployment]["replicas"] if r.get("pid"))


class Quiet:
    """True once a process used under a fifth of a core over a second or more between two calls."""

    def __init__(self, pid: int):
        self.pid, self.since = pid, (time.monotonic(), cpu_s(pid))

    def __call__(self) -> bool:
        (t0, c0), now = self.since, (time.monotonic(), cpu_s(self.pid))
        if now[0] - t0 < 1.0:
            return False
        self.since = now
        return now[1] - c0 < 0.2 * (now[0] - t0)


def hang_up_and_wait_for_quiet(base: str, model: str, pid: int, stream: bool) -> None:
    """Ask `base` for a long answer from `model`, hang up while the process `pid` generates it, and fail unless
    that process goes quiet soon after."""
    ended = []
    for prompt in LONG_ANSWERS:
        ended.append(_hang_up_while_generating(base, model, pid, prompt, stream))
        if ended[-1] is None:
            break
    assert ended[-1] is None, f"the model ended every long answer before the client left: {ended}"
    # 2,000 tokens take the tiny model 20 s or more: a generation left running keeps the replica busy past this wait
    wait_for(Quiet(pid), 6, "the model's replica to stop generating after its client left", interval=0.5)


def _hang_up_while_generating(base: str, model: str, pid: int, prompt: str, stream: bool) -> str | None:
    """Ask for a long answer and hang up once the model's replica has generated for a while. None if it did; else
    what the model answered before it ended by itself."""
    body = {"model": model, "stream": stream, "max_tokens": 2000, "temperature": 0,
            "messages": [{"role": "user", "content": prompt}]}
    before = cpu_s(pid)
    if stream:
        return _stream_and_hang_up(base, body, lambda: cpu_s(pid) - before > 1.5)
    try:
        reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=2.5)
    except httpx.ReadTimeout:
        return None if cpu_s(pid) - before > 1.0 else f"only {cpu_s(pid) - before:.2f} CPU-s in 2.5 s"
    return reply.text[-300:]


def _stream_and_hang_up(base: str, body: dict, enough) -> str | None:
    """A streamed request over a plain socket, closed once enough() says the model has generated for a while: the
    hang-up is one close(), whatever an HTTP library does with a response left in the middle, so that the test
    checks the server's side alone. None once hung up; else the tail of what came before the stream ended."""
    url = urlsplit(base)
    payload = json.dumps(body).encode()
    received = b""
    with socket.create_connection((url.hostname, url.port), timeout=60) as sock:
        sock.sendall(b"POST %s/v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                     % (url.path.rstrip("/").encode(), url.netloc.encode(), len(payload), payload))
        while (chunk := sock.recv(65536)) and b"data: [DONE]" not in received:
            received += chunk
            if b"data: {" in received and enough():  # about a core-second a second
                sock.shutdown(socket.SHUT_RDWR)
                return None
    return received.decode(errors="replace")[-300:]
