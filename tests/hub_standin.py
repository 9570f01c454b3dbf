#!/usr/bin/env python3
"""A stand-in for the Hugging Face Hub, served on 127.0.0.1 for fp4lab's tests (no test touches the network).

Usage: hub_standin.py MODEL_DIR DATA_DIR PORT_FILE LOG_FILE

Endpoints as the Hub has them: GET /api/models/{org}/{name}/revision/{rev}?blobs=true and
GET /{org}/{name}/resolve/{rev}/{file} (Range requests honoured), plus /data/{file} for plain data files.
Repository names choose a behaviour: org/tiny (normal), org/gated (needs "Bearer secret"), org/flaky (429/503
before answering), org/corrupt (a safetensors byte flipped), org/cut (the first download of each safetensors file
is cut halfway), org/huge (claims a file larger than any disk). Every request is logged as a JSON line (method,
path, range, whether an Authorization header came; never its value).
"""
import hashlib
import http.server
import json
import os
import sys
import threading

MODEL_DIR, DATA_DIR, PORT_FILE, LOG_FILE = sys.argv[1:5]
REPOS = {"tiny", "gated", "flaky", "corrupt", "cut", "huge", "prebuilt"}
lock = threading.Lock()
counts = {}


def commit_of(repo):
    return hashlib.sha1(repo.encode()).hexdigest()


def git_blob_id(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def files():
    out = []
    for f in sorted(os.listdir(MODEL_DIR)):
        if f.startswith("golden"):
            continue
        with open(os.path.join(MODEL_DIR, f), "rb") as fh:
            out.append((f, fh.read()))
    return out


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def log(self):
        with lock, open(LOG_FILE, "a") as fh:
            fh.write(json.dumps({"method": self.command, "path": self.path, "range": self.headers.get("Range"),
                                 "auth": self.headers.get("Authorization") is not None}) + "\n")

    def send(self, code, body=b"", headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def bump(self, key):
        with lock:
            counts[key] = counts.get(key, 0) + 1
            return counts[key]

    def do_GET(self):
        self.log()
        path = self.path.split("?")[0]
        parts = path.strip("/").split("/")
        if parts[0] == "data" and len(parts) == 2:
            return self.serve_bytes(open(os.path.join(DATA_DIR, parts[1]), "rb").read(), {})
        if parts[0] == "api" and len(parts) >= 6 and parts[1] == "models" and parts[4] == "revision":
            org, name, rev = parts[2], parts[3], parts[5]
            return self.api(org, name, rev)
        if len(parts) >= 5 and parts[2] == "resolve":
            org, name, rev, fname = parts[0], parts[1], parts[3], "/".join(parts[4:])
            return self.resolve(org, name, rev, fname)
        self.send(404, b'{"error":"not found"}')

    def guard(self, org, name):
        if org != "org" or name not in REPOS:
            self.send(404, b'{"error":"Repository not found"}')
            return False
        if name == "gated" and self.headers.get("Authorization") != "Bearer secret":
            self.send(401, b'{"error":"Access to model org/gated is restricted."}')
            return False
        if name == "flaky" and self.bump(("flaky", self.path)) <= 2:
            self.send(429 if "/api/" in self.path else 503, b'{"error":"slow down"}')
            return False
        return True

    def api(self, org, name, rev):
        if not self.guard(org, name):
            return
        repo = org + "/" + name
        if rev not in ("main", commit_of(repo)):
            return self.send(404, b'{"error":"Revision not found"}')
        sib = []
        for f, data in files():
            e = {"rfilename": f, "blobId": git_blob_id(data), "size": len(data)}
            if f.endswith(".safetensors"):
                size = len(data) if name != "huge" else 10**15
                e["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": size, "pointerSize": 134}
            sib.append(e)
        sib.append({"rfilename": "onnx/model.onnx", "blobId": "0" * 40, "size": 5})
        body = json.dumps({"id": repo, "sha": commit_of(repo), "siblings": sib}).encode()
        self.send(200, body, {"Content-Type": "application/json"})

    def resolve(self, org, name, rev, fname):
        if not self.guard(org, name):
            return
        data = dict(files()).get(fname)
        if data is None:
            return self.send(404, b'{"error":"Entry not found"}')
        if name == "corrupt" and fname.endswith(".safetensors"):
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        headers = {"X-Repo-Commit": commit_of(org + "/" + name), "ETag": '"%s"' % git_blob_id(data)}
        cut = name == "cut" and fname.endswith(".safetensors") and self.bump(("cut", fname)) == 1
        self.serve_bytes(data, headers, cut)

    def serve_bytes(self, data, headers, cut=False):
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                return self.send(416, b"", {"Content-Range": "bytes */%d" % len(data)})
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, len(data) - 1, len(data))
        body = data[start:]
        self.send_response(206 if start else 200)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(PORT_FILE + ".tmp", "w") as fh:
    fh.write(str(server.server_address[1]))
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
