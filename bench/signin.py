"""What sign-in costs per HTTP request (issue #23): a users-file token and an OAuth JWT access
token (RS256, keys cached), checked by the server's own verifiers, in one process.

    python -m bench.signin [--n 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import anyio
import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from stillmotion.http.signin import JwtVerifier, UsersFile

ISSUER = "https://idp.example.com/"
AUDIENCE = "https://mcp.example.com/mcp"


async def measure(n: int) -> dict[str, list[float]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")

    def idp(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"keys": [jwk]})

    verifier = JwtVerifier(ISSUER, AUDIENCE, ["stillmotion"], jwks_url="https://idp.example.com/jwks",
                           client=httpx.AsyncClient(transport=httpx.MockTransport(idp)))
    now = int(time.time())
    token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "scope": "stillmotion", "iat": now,
                        "exp": now + 3600}, key, algorithm="RS256", headers={"kid": "k1"})
    assert await verifier.verify_token(token) is not None  # the key fetch, outside the timing
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "users.json"
        users = {f"user{i}": hashlib.sha256(f"token-{i}".encode()).hexdigest() for i in range(1000)}
        path.write_text(json.dumps({"users": users}))
        table = UsersFile(path)
        out: dict[str, list[float]] = {"OAuth JWT (RS256, cached key)": [], "users file (1000 users)": []}
        for _ in range(n):
            t = time.perf_counter()
            await verifier.verify_token(token)
            out["OAuth JWT (RS256, cached key)"].append((time.perf_counter() - t) * 1e6)
            t = time.perf_counter()
            await table.verify_token("token-500")
            out["users file (1000 users)"].append((time.perf_counter() - t) * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    n = parser.parse_args().n
    results = anyio.run(measure, n)
    print("| token | median | p95 | n | unit |")
    print("|---|---:|---:|---:|---|")
    for name, xs in results.items():
        xs.sort()
        print(f"| {name} | {statistics.median(xs):.0f} | {xs[int(len(xs) * 0.95)]:.0f} | {len(xs)} | µs |")


if __name__ == "__main__":
    main()
