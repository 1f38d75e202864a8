#!/usr/bin/env python3
"""Creates the tenant and one extension per users.csv row through the pbx HTTP API.

usage: provision.py API_URL OPERATOR_TOKEN SLUG EXPECTED_FQDN USERS_CSV
One keep-alive HTTP connection (http.client), no third-party modules. Loopback only.
"""
import http.client
import json
import sys
import urllib.parse

api, token, slug, fqdn, csv = sys.argv[1:6]
u = urllib.parse.urlsplit(api)
if u.hostname not in ("127.0.0.1", "localhost", "::1"):
    sys.exit(f"refusing non-loopback API {api}")
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def call(method, path, body):
    conn.request(method, path, body=json.dumps(body), headers=headers)
    r = conn.getresponse()
    data = r.read()
    return r.status, data


status, data = call("POST", "/api/v1/tenants", {"slug": slug, "name": "load test"})
if status != 201:
    sys.exit(f"POST /api/v1/tenants: {status} {data[:500]!r}")
got = json.loads(data)["tenant"]["fqdn"]
if got != fqdn:
    sys.exit(f"tenant fqdn is {got}, the users file needs {fqdn}")

n = 0
with open(csv) as f:
    for line in f:
        line = line.strip()
        if not line or line == "SEQUENTIAL":
            continue
        number, auth, _dom = line.split(";")[:3]
        secret = auth.split("password=")[1].rstrip("]")
        status, data = call("POST", f"/api/v1/tenants/{slug}/extensions",
                            {"number": number, "sip_secret": secret})
        if status != 201:
            sys.exit(f"POST extension {number}: {status} {data[:500]!r}")
        n += 1
print(f"provision: tenant {fqdn}, {n} extensions created", file=sys.stderr)
