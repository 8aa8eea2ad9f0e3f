#!/usr/bin/env python3
"""The server test behind Scripts/check-server.sh: for each checkpoint, start ssmrec-server on a
loopback port, post events for several users (concurrently), compare every recommendation with
`ssmrec recommend --history`, send malformed requests (each must get a 4xx and a JSON error),
SIGKILL the server, restart it on the same database and expect the same lengths and answers."""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

WINDOW = 8


def fail(message):
    print(f"check-server: {message}", file=sys.stderr)
    sys.exit(1)


class Server:
    def __init__(self, binary, checkpoint, data, database):
        self.process = subprocess.Popen(
            [binary, "--checkpoint", checkpoint, "--data", data, "--database", database, "--port", "0",
             "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
        deadline = time.time() + 60
        line = ""
        while time.time() < deadline:
            line = self.process.stdout.readline()
            if line.startswith("listening on ") or line == "":
                break
        if not line.startswith("listening on "):
            self.process.kill()
            fail(f"the server did not start (exit status {self.process.poll()})")
        self.base = f"http://127.0.0.1:{int(line.split()[-1])}"

    def request(self, method, path, body=None, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def json(self, method, path, body=None):
        status, payload = self.request(method, path, body)
        if status != 200:
            fail(f"{method} {path} answered {status}: {payload[:200]!r}")
        return json.loads(payload)

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def recommend_cli(ssmrec, checkpoint, data, history, k, exclude_seen):
    command = [ssmrec, "recommend", "--checkpoint", checkpoint, "--data", data, "--history", ",".join(history), "-k",
               str(k)] + (["--exclude-seen"] if exclude_seen else [])
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return output.strip().split(": ", 1)[1].split()


def check_malformed(server, known_user):
    cases = [
        ("POST", f"/v1/users/{known_user}/events", None, b"{not json"),
        ("POST", f"/v1/users/{known_user}/events", None, b""),
        ("POST", f"/v1/users/{known_user}/events", {"items": []}, None),
        ("POST", f"/v1/users/{known_user}/events", {"things": [1]}, None),
        ("POST", f"/v1/users/{known_user}/events", {"items": "1"}, None),
        ("POST", f"/v1/users/{known_user}/events", {"items": [1, "no-such-item"]}, None),
        ("POST", f"/v1/users/{known_user}/events", {"items": [0]}, None),
        ("POST", f"/v1/users/{known_user}/events", {"items": [1.5]}, None),
        ("POST", f"/v1/users/{known_user}/events", {"items": [None]}, None),
        ("POST", f"/v1/users/{known_user}/events", None, b'{"items": [' + b"1," * 40000 + b"1]}"),
        ("POST", f"/v1/users/{'x' * 300}/events", {"items": [1]}, None),
        ("GET", f"/v1/users/{known_user}/recommendations?k=0", None, None),
        ("GET", f"/v1/users/{known_user}/recommendations?k=-3", None, None),
        ("GET", f"/v1/users/{known_user}/recommendations?k=ten", None, None),
        ("GET", f"/v1/users/{known_user}/recommendations?k=100000", None, None),
        ("GET", f"/v1/users/{known_user}/recommendations?k=99999999999999999999999", None, None),
        ("GET", f"/v1/users/{known_user}/recommendations?exclude_seen=maybe", None, None),
        ("GET", "/v1/users/nobody-posted-this/recommendations", None, None),
        ("POST", "/v1/recommendations", {"history": []}, None),
        ("POST", "/v1/recommendations", {"history": ["no-such-item"]}, None),
        ("POST", "/v1/recommendations", {"history": [1], "k": 0}, None),
        ("POST", "/v1/recommendations", {"history": [1], "k": "3"}, None),
        ("POST", "/v1/recommendations", None, b"[1, 2]"),
        ("GET", "/v1/no-such-route", None, None),
        ("DELETE", f"/v1/users/{known_user}/events", None, None),
    ]
    for method, path, body, raw in cases:
        status, payload = server.request(method, path, body, raw)
        label = f"{method} {path[:60]} {json.dumps(body)[:60] if body is not None else (raw or b'')[:30]!r}"
        if not 400 <= status < 500:
            fail(f"{label} answered {status}, not a 4xx")
        try:
            error = json.loads(payload)["error"]
        except (ValueError, KeyError, TypeError):
            fail(f"{label} answered {status} without a JSON error: {payload[:100]!r}")
        if not isinstance(error, str) or not error:
            fail(f"{label}: the error is not a message: {payload[:100]!r}")
    if server.process.poll() is not None:
        fail("the server exited during the malformed requests")
    return len(cases)


def check(arguments, checkpoint):
    name = os.path.basename(os.path.dirname(checkpoint))
    database = os.path.join(arguments.work, f"{name}-events.sqlite")
    items = [line.split("\t")[1] for line in open(arguments.data).read().splitlines()[1:]]
    vocabulary = sorted(set(items), key=int)
    rng = random.Random(7)
    # Lengths within the window, at it, and well past it (the exact window re-encodes).
    lengths = {f"user-{i}": n for i, n in enumerate([1, 2, 5, WINDOW, WINDOW + 1, 13, 2 * WINDOW + 3, 30])}
    histories = {user: [rng.choice(vocabulary) for _ in range(n)] for user, n in lengths.items()}

    server = Server(arguments.server, checkpoint, arguments.data, database)
    health = server.json("GET", "/healthz")
    if health["status"] != "ok":
        fail(f"/healthz: {health}")

    # Each user's events in several posts (one to four items), users posting concurrently.
    def post_all(user):
        history, posted = histories[user], 0
        while posted < len(history):
            chunk = history[posted:posted + rng.randint(1, 4)]
            answer = server.json("POST", f"/v1/users/{user}/events", {"items": [int(t) for t in chunk]})
            posted += len(chunk)
            if answer != {"user": user, "length": posted}:
                errors.append(f"{user}: {answer} after {posted} events")

    errors = []
    threads = [threading.Thread(target=post_all, args=(user,)) for user in histories]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        fail("; ".join(errors))

    def answers(server):
        result = {}
        for user in histories:
            for exclude in (False, True):
                got = server.json("GET", f"/v1/users/{user}/recommendations?k=10&exclude_seen={str(exclude).lower()}")
                if got["user"] != user or len(got["items"]) != 10 or len(got["scores"]) != 10:
                    fail(f"{user}: {got}")
                result[(user, exclude)] = got["items"]
        return result

    before = answers(server)
    for (user, exclude), got in before.items():
        expected = recommend_cli(arguments.ssmrec, checkpoint, arguments.data, histories[user], 10, exclude)
        if got != expected:
            fail(f"{name} {user} (length {lengths[user]}, exclude_seen {exclude}): server {got}, ssmrec recommend {expected}")
        if exclude and set(got) & set(histories[user]):
            fail(f"{user}: exclude_seen returned a seen item")
        stateless = server.json("POST", "/v1/recommendations",
                                {"history": histories[user], "k": 10, "exclude_seen": exclude})
        if stateless["items"] != got:
            fail(f"{user}: /v1/recommendations {stateless['items']} differs from the stored user's {got}")

    malformed = check_malformed(server, "user-0")
    metrics = server.request("GET", "/metrics")[1].decode()
    if 'ssmrec_requests_total{route="/v1/users/{user}/events",method="POST",status="200"}' not in metrics:
        fail(f"/metrics does not count the posted events:\n{metrics[:600]}")

    server.kill()
    server = Server(arguments.server, checkpoint, arguments.data, database)
    after = answers(server)
    if after != before:
        fail(f"{name}: recommendations changed across SIGKILL and restart")
    user = "user-0"
    answer = server.json("POST", f"/v1/users/{user}/events", {"items": [vocabulary[0]]})
    if answer["length"] != lengths[user] + 1:
        fail(f"{user} has {answer['length']} events after a restart and one more post, not {lengths[user] + 1}")
    server.kill()
    print(f"check-server: {name}: {len(before)} answers equal to ssmrec recommend, identical after SIGKILL and restart; "
          f"{malformed} malformed requests answered 4xx")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--ssmrec", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--checkpoints", nargs="+", required=True)
    arguments = parser.parse_args()
    for checkpoint in arguments.checkpoints:
        check(arguments, checkpoint)


if __name__ == "__main__":
    main()
