#!/usr/bin/env python3
"""A second, independent mock of the two APIs, written from SPEC §6 alone.

The Rust sandbox (src/sandbox) and the importer share one author's reading
of the contracts; this mock is a different reading in a different language,
so that a mistake shared by both shows up here. It makes other choices
wherever the contract leaves room: members kept in a dict in insertion
order, ties in `last_changed` sorted stably, `since_last_changed` and
`before_last_changed` both exclusive, Ometria answering 202, Mailchimp
returning every member field unless `fields` narrows it, and faults that
cut connections mid-body.

    mock.py --port 0 --lists a:3000,b:2000 --fault-rate 0.1 --mutations 20 [--shuffle-ties] [--same-second]

prints one line `ready <port>` when it listens. Control and inspection:
    POST /_control/mutations?on=0|1     stop or restart live mutations
    GET  /_verify                       {"ok": …, "lists": {id: {...}}}
    GET  /_stats                        request, fault and write counts
Only the Python standard library is used.
"""

import argparse
import base64
import hashlib
import json
import random
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

MAILCHIMP_KEY = "contract0mailchimp0key-us9"
OMETRIA_KEY = "contract-ometria-key"
CONNECTION_CAP = 10
STATUSES = ["subscribed"] * 6 + ["unsubscribed", "cleaned", "pending", "transactional", "archived"]
NAMES = ["Zoë", "", "李小龙", "O'Brien", "Ñúñez", " ", "Müller 🚀", "Smith", "Đặng", "\"Q\" \\ tab\t"]

lock = threading.Lock()
lists = {}  # list_id -> {member_id: member}
deleted = {}  # list_id -> set of member ids
contacts = {}  # id -> record as pushed
writes = {}  # id -> times written
stats = {"mailchimp": 0, "ometria": 0, "faults": {}, "rejected": 0, "mutations": 0,
         "max_in_flight": 0}
in_flight = [0]
mutating = threading.Event()
bucket = {"tokens": 8.0, "at": time.monotonic(), "rate": 8.0}
rng = random.Random(7)


def stamp(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def parse_time(text):
    text = text.strip().replace("Z", "+00:00")
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc)


def now():
    return datetime.now(timezone.utc).replace(microsecond=0)


def new_member(list_id, serial, changed):
    status = rng.choice(STATUSES)
    email = f"m{serial}.{list_id}@contract.example"
    return {
        "id": hashlib.md5(email.encode()).hexdigest(),
        "email_address": email,
        "unique_email_id": "" if serial % 997 == 5 else f"{list_id}-{serial:07d}",
        "web_id": serial,
        "email_type": "html",
        "status": status,
        "merge_fields": {"FNAME": rng.choice(NAMES), "LNAME": rng.choice(NAMES),
                         "ADDRESS": "", "PHONE": "", "BIRTHDAY": ""},
        "stats": {"avg_open_rate": 0.5, "avg_click_rate": 0.1},
        "ip_signup": "", "timestamp_signup": "", "ip_opt": "198.51.100.7",
        "timestamp_opt": "" if status == "pending" else stamp(changed - timedelta(days=3)),
        "member_rating": 2, "last_changed": stamp(changed), "language": "",
        "vip": False, "email_client": "", "location": {"latitude": 0, "longitude": 0},
        "tags_count": 0, "tags": [], "list_id": list_id,
        "_links": [{"rel": "self", "href": "https://example.invalid", "method": "GET"}],
    }


def generate(list_id, size, same_second=False):
    start = now() - timedelta(days=30)
    members = {}
    for serial in range(size):
        # Few distinct seconds: long runs of ties (or one run, as a bulk import makes).
        changed = start if same_second else start + timedelta(
            seconds=rng.randrange(0, 86400 * 20, 3600) + rng.randrange(0, 3))
        m = new_member(list_id, serial, changed)
        members[m["id"]] = m
    lists[list_id] = members
    deleted[list_id] = set()


def project(obj, fields, exclude):
    def pick(value, paths):
        if not paths or not isinstance(value, dict):
            return value
        out = {}
        for key in value:
            subs = [p[1:] for p in paths if p[0] == key]
            if subs:
                out[key] = value[key] if any(len(s) == 0 for s in subs) else pick(value[key], subs)
                if isinstance(out[key], list):
                    out[key] = [pick(v, [s for s in subs if s]) for v in out[key]]
        return out

    def drop(value, paths):
        if not isinstance(value, dict):
            return value
        out = {}
        for key, v in value.items():
            subs = [p[1:] for p in paths if p[0] == key]
            if any(len(s) == 0 for s in subs):
                continue
            rest = [s for s in subs if s]
            out[key] = [drop(x, rest) for x in v] if isinstance(v, list) else drop(v, rest)
        return out

    if fields:
        obj = pick(obj, [f.split(".") for f in fields.split(",") if f])
    if exclude:
        obj = drop(obj, [f.split(".") for f in exclude.split(",") if f])
    return obj


def mutate_forever(rate):
    while True:
        time.sleep(1.0 / rate)
        if not mutating.is_set():
            continue
        with lock:
            list_id = rng.choice(list(lists))
            members = lists[list_id]
            t = stamp(now())
            kind = rng.choice(["change", "change", "archive", "unsubscribe", "delete", "add"])
            if kind == "add":
                serial = len(members) + len(deleted[list_id]) + 10_000_000
                m = new_member(list_id, serial, now())
                members[m["id"]] = m
            else:
                m = members[rng.choice(list(members))]
                if kind == "delete":
                    del members[m["id"]]
                    deleted[list_id].add(m["unique_email_id"])
                else:
                    if kind == "change":
                        m["merge_fields"]["FNAME"] = rng.choice(NAMES) + str(rng.randrange(1000))
                    else:
                        m["status"] = "archived" if kind == "archive" else "unsubscribed"
                    m["last_changed"] = t
            stats["mutations"] += 1


def expected(member, list_id):
    status = member["status"]
    optin = {"subscribed": "EXPLICITLY_OPTEDIN", "unsubscribed": "EXPLICITLY_OPTEDOUT",
             "cleaned": "EXPLICITLY_OPTEDOUT", "archived": "EXPLICITLY_OPTEDOUT"}.get(status, "NOT_SPECIFIED")
    record = {"@type": "contact", "id": member["unique_email_id"], "email": member["email_address"],
              "marketing_optin": optin,
              "properties": {"mailchimp_status": status, "mailchimp_list_id": list_id}}
    if member["merge_fields"]["FNAME"]:
        record["firstname"] = member["merge_fields"]["FNAME"]
    if member["merge_fields"]["LNAME"]:
        record["lastname"] = member["merge_fields"]["LNAME"]
    if status == "subscribed" and member["timestamp_opt"]:
        record["timestamp_subscribed"] = member["timestamp_opt"]
    return record


def verify():
    report = {"ok": True, "lists": {}}
    with lock:
        for list_id, members in lists.items():
            missing, wrong, checked = [], [], 0
            for m in members.values():
                if not m["unique_email_id"]:
                    continue
                checked += 1
                found = contacts.get(m["unique_email_id"])
                if found is None:
                    missing.append(m["unique_email_id"])
                elif found != expected(m, list_id):
                    wrong.append({"expected": expected(m, list_id), "found": found})
            report["lists"][list_id] = {"members": checked, "missing": len(missing),
                                        "wrong": len(wrong), "examples": (missing[:3], wrong[:2])}
            report["ok"] = report["ok"] and not missing and not wrong
        report["writes"] = sum(writes.values())
        report["stats"] = stats
    return report


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fault_rate = 0.0
    shuffle_ties = False

    def log_message(self, *args):
        pass

    def answer(self, status, body=None, headers=()):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if body is not None:
            kind = "application/problem+json" if status >= 400 else "application/json"
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def problem(self, status, title, detail):
        self.answer(status, {"type": "https://mailchimp.com/developer/marketing/docs/errors/",
                             "title": title, "status": status, "detail": detail, "instance": str(uuid.uuid4())})

    def fault(self, api, body_for_truncation=None):
        """Maybe injects a fault; True when the request was answered by it."""
        if rng.random() >= self.fault_rate:
            return False
        kinds = ["500", "503", "429", "reset", "truncate", "slow"]
        if api == "mailchimp":
            kinds.append("403")
        kind = rng.choice(kinds)
        with lock:
            stats["faults"][kind] = stats["faults"].get(kind, 0) + 1
        if kind == "500":
            self.problem(500, "Internal Server Error", "injected")
        elif kind == "503":
            self.answer(503)
        elif kind == "429":
            self.problem(429, "Too Many Requests", "injected")
        elif kind == "403":
            self.answer(403)
        elif kind == "reset":
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()
        elif kind == "truncate":
            data = json.dumps(body_for_truncation or {"members": [], "total_items": 0}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        elif kind == "slow":
            # Longer than the importer's client timeout in the driver: the
            # importer gives up and retries, but this request is still applied
            # afterwards, as a real server that was merely slow would do.
            time.sleep(8)
            return False
        return True

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/_verify":
            return self.answer(200, verify())
        if url.path == "/_stats":
            with lock:
                return self.answer(200, stats)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["3.0", "lists"] or parts[3] != "members":
            return self.problem(404, "Resource Not Found", f"no route {url.path}")
        auth = self.headers.get("Authorization", "")
        try:
            password = base64.b64decode(auth.split(" ", 1)[1]).decode().split(":", 1)[1]
        except Exception:
            password = None
        if not auth.startswith("Basic ") or password != MAILCHIMP_KEY:
            return self.problem(401, "API Key Invalid", "Your API key may be invalid.")
        with lock:
            if in_flight[0] >= CONNECTION_CAP:
                return self.problem(429, "Too Many Requests", "You have exceeded the limit of 10 simultaneous connections.")
            in_flight[0] += 1
            stats["mailchimp"] += 1
            stats["max_in_flight"] = max(stats["max_in_flight"], in_flight[0])
        try:
            self.members(parts[2], parse_qs(url.query))
        finally:
            with lock:
                in_flight[0] -= 1

    def members(self, list_id, q):
        arg = lambda k, d=None: q.get(k, [d])[0]
        if self.fault("mailchimp"):
            return
        with lock:
            if list_id not in lists:
                return self.problem(404, "Resource Not Found", "The requested resource could not be found.")
            count, offset = int(arg("count", "10")), int(arg("offset", "0"))
            if count > 1000:
                return self.problem(400, "Invalid Resource", "count must be at most 1000")
            status = arg("status")
            since, before = arg("since_last_changed"), arg("before_last_changed")
            since = parse_time(since) if since else None
            before = parse_time(before) if before else None
            chosen = []
            for m in lists[list_id].values():
                if (m["status"] == status) if status else m["status"] != "archived":
                    t = parse_time(m["last_changed"])
                    if (since is None or t > since) and (before is None or t < before):
                        chosen.append(m)
            if Handler.shuffle_ties:
                rng.shuffle(chosen)  # ties in a new order on every request, as SQL may
            if arg("sort_field") == "last_changed":
                chosen.sort(key=lambda m: m["last_changed"], reverse=arg("sort_dir") == "DESC")
            page = {"members": [json.loads(json.dumps(m)) for m in chosen[offset: offset + count]],
                    "list_id": list_id, "total_items": len(chosen),
                    "_links": [{"rel": "parent", "href": "https://example.invalid"}]}
        page = project(page, arg("fields"), arg("exclude_fields"))
        if self.fault("mailchimp", page):
            return
        self.answer(200, page)

    def do_POST(self):
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if url.path == "/_control/mutations":
            on = parse_qs(url.query).get("on", ["1"])[0] == "1"
            (mutating.set if on else mutating.clear)()
            return self.answer(200, {"mutating": on})
        if url.path != "/v2/push":
            return self.answer(404, {"status": "ERROR", "message": "not found"})
        if self.headers.get("X-Ometria-Auth") != OMETRIA_KEY:
            return self.answer(401, {"status": "ERROR", "message": "bad key"})
        with lock:
            stats["ometria"] += 1
            t = time.monotonic()
            rate = bucket["rate"]
            bucket["tokens"] = min(rate, bucket["tokens"] + (t - bucket["at"]) * rate)
            bucket["at"] = t
            if bucket["tokens"] < 1.0:
                stats["faults"]["rate"] = stats["faults"].get("rate", 0) + 1
                return self.answer(429, {"status": "ERROR", "message": "rate limit"}, [("Retry-After", "1")])
            bucket["tokens"] -= 1.0
        if self.fault("ometria", {"status": "OK", "accepted": 0, "rejected": 0}):
            return
        try:
            records = json.loads(raw)
        except ValueError:
            return self.answer(400, {"status": "ERROR", "message": "body is not JSON"})
        if not isinstance(records, list) or len(records) > 100:
            return self.answer(400, {"status": "ERROR", "message": "a JSON array of at most 100 records"})
        accepted = rejected = 0
        with lock:
            for r in records:
                good = (isinstance(r, dict) and r.get("@type") == "contact" and r.get("id")
                        and "@" in str(r.get("email", "")))
                if good:
                    contacts[r["id"]] = r
                    writes[r["id"]] = writes.get(r["id"], 0) + 1
                    accepted += 1
                else:
                    rejected += 1
            stats["rejected"] += rejected
        self.answer(202, {"status": "OK", "request_id": str(uuid.uuid4()),
                          "accepted": accepted, "rejected": rejected})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--lists", default="c0ffee0001:3000")
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--mutations", type=float, default=0.0, help="per second, all lists")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--ometria-rate", type=float, default=8.0, help="Ometria requests per second per key")
    p.add_argument("--shuffle-ties", action="store_true", help="ties in a new order on every request")
    p.add_argument("--same-second", action="store_true", help="every member last changed in one second")
    a = p.parse_args()
    rng.seed(a.seed)
    for spec in a.lists.split(","):
        list_id, size = spec.split(":")
        generate(list_id, int(size), a.same_second)
    Handler.fault_rate = a.fault_rate
    bucket["rate"] = bucket["tokens"] = a.ometria_rate
    Handler.shuffle_ties = a.shuffle_ties
    if a.mutations > 0:
        mutating.set()
        threading.Thread(target=mutate_forever, args=(a.mutations,), daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
