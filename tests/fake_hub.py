"""A loopback stand-in for the Hugging Face Hub, serving only the endpoints huggingface_hub 2.4 calls.

Hand-written because no library serves the Hub protocol locally. Endpoints (as read from the client's
source): repo info and tree listing, file resolve (HEAD + GET with Range), create repo, validate-yaml,
preupload, the LFS batch API with basic PUT transfers and verify, and the ndjson commit endpoint.
It never advertises Xet storage, so the client takes the plain HTTP/LFS paths.

Every request is logged to `<root>/requests.jsonl` (method, path, all headers, status) with its body in
`<root>/bodies/<n>.bin`; every committed file is written to `<root>/received/<type>s/<repo>/<path>`.
Tests assert on those files, not on internals of the client.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_PATTERNS = ("*.safetensors", "*.bin", "*.png", "*.jpg", "*.zip", "*.pt", "*.gz")
LFS_MIN_SIZE = 10 * 1024 * 1024


def allow_loopback(monkeypatch) -> None:
    """Let the in-process client talk to this server although the suite sets HF_HUB_OFFLINE=1.

    conftest.py sets HF_HUB_OFFLINE before huggingface_hub is imported, so every other test stays off the
    network; huggingface_hub freezes that env var into `constants.HF_HUB_OFFLINE` at import. Tests that
    point the client at 127.0.0.1 turn the frozen flag off for their own duration, as the env var would.
    """
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, size: int) -> bool:
    return size >= LFS_MIN_SIZE or any(fnmatch.fnmatch(path, pattern) for pattern in LFS_PATTERNS)


@dataclass
class Commit:
    oid: str
    files: dict[str, bytes]
    message: str
    description: str = ""
    parent: str | None = None


@dataclass
class FakeRepo:
    repo_id: str
    repo_type: str = "model"
    private: bool = False
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)

    def commit(self, files: dict[str, bytes], message: str = "initial", branch: str = "main",
               description: str = "", replace: bool = True, oid: str | None = None) -> str:
        """Record a commit on `branch` holding `files` (on top of the branch head unless `replace`);
        `oid` gives it a chosen sha (a commit a sources file pins), else one is derived from the files."""
        parent = self.refs.get(branch)
        merged = {} if replace or parent is None else dict(self.commits[parent].files)
        merged.update(files)
        digest = oid or hashlib.sha1(json.dumps(
            [parent, message, sorted((p, hashlib.sha256(d).hexdigest()) for p, d in merged.items())]
        ).encode()).hexdigest()
        self.commits[digest] = Commit(digest, merged, message, description, parent)
        self.refs[branch] = digest
        self.history.append(digest)
        return digest

    def tag(self, name: str, commit: str) -> None:
        self.refs[name] = commit

    def resolve(self, revision: str) -> Commit | None:
        oid = self.refs.get(revision, revision)
        return self.commits.get(oid)


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 and a free port, serving while used as a context manager."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeHub(LoopbackServer):
    """Threaded HTTP server on 127.0.0.1 with in-memory repos; use as a context manager."""

    def __init__(self, root: str | Path, token: str | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "bodies").mkdir(exist_ok=True)
        self.token = token
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.cut_once: dict[str, int] = {}  # file path -> bytes its next full GET sends before hanging up
        self.fail_get: dict[str, int] = {}  # file path -> how many GETs answer 500
        self.listed_sizes: dict[str, int] = {}  # file path -> size the tree listing claims (a lying mirror)
        self.lock = threading.Lock()
        super().__init__(_make_handler(self))

    def add_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> FakeRepo:
        repo = FakeRepo(repo_id, repo_type, private)
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def repo(self, repo_id: str, repo_type: str = "model") -> FakeRepo:
        return self.repos[(repo_type, repo_id)]

    def requests_for(self, method: str | None = None, contains: str = "") -> list[dict]:
        return [r for r in self.requests if (method is None or r["method"] == method) and contains in r["path"]]

    def clear_log(self) -> None:
        with self.lock:
            self.requests.clear()

    def write_received(self, repo: FakeRepo) -> None:
        head = repo.resolve("main")
        base = self.root / "received" / f"{repo.repo_type}s" / repo.repo_id
        for path, data in head.files.items():
            target = base / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def _make_handler(hub: FakeHub):
    class Handler(_HubHandler):
        pass

    Handler.hub = hub
    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, *args) -> None:  # keep pytest output clean; requests go to requests.jsonl
        pass

    # ---- plumbing -------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _record(self, body: bytes, status: int, extra: dict | None = None) -> None:
        with self.hub.lock:
            index = len(self.hub.requests)
            body_file = self.hub.root / "bodies" / f"{index}.bin"
            body_file.write_bytes(body)
            entry = {"i": index, "method": self.command, "path": self.path, "status": status,
                     "headers": dict(self.headers.items()), "body_file": body_file.name, **(extra or {})}
            self.hub.requests.append(entry)
            with open(self.hub.root / "requests.jsonl", "a") as log:
                log.write(json.dumps(entry) + "\n")

    def _send(self, status: int, payload=None, headers: dict | None = None, body: bytes | None = None,
              head_only: bool = False) -> None:
        if body is None:
            body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, head_only: bool = False) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers=headers, head_only=head_only)

    def _authorized(self) -> bool:
        return self.hub.token is None or self.headers.get("Authorization") == f"Bearer {self.hub.token}"

    def _dispatch(self, body: bytes) -> int:
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        for prefix, method in ROUTES.get(self.command, ()):
            if path.startswith(prefix) or prefix == "*":
                return method(self, path, query, body)
        self._error(404, None, f"no route for {self.command} {path}")
        return 404

    def _handle(self) -> None:
        body = self._body() if self.command in ("POST", "PUT") else b""
        status = self._dispatch(body)
        self._record(body, status)

    do_GET = do_HEAD = do_POST = do_PUT = _handle

    # ---- repo lookup ------------------------------------------------------------------------------
    def _repo(self, repo_type: str, repo_id: str, head_only: bool = False) -> FakeRepo | None:
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._authorized()):
            self._error(404, "RepoNotFound", "Repository not found", head_only)
            return None
        return repo

    def _commit(self, repo: FakeRepo, revision: str, head_only: bool = False) -> Commit | None:
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head_only)
        return commit

    # ---- read API -----------------------------------------------------------------------------------
    def api_repo(self, path: str, query: dict, body: bytes) -> int:
        if "/" not in path[len("/api/"):]:  # e.g. /api/whoami-v2: not served, answered like the Hub's 404
            self._error(404, None, f"no route for {self.command} {path}")
            return 404
        kind, rest = path[len("/api/"):].split("/", 1)
        repo_type = kind[:-1]
        for verb, handler in (("/revision/", self._info), ("/tree/", self._tree), ("/preupload/", self._preupload),
                              ("/commit/", self._commit_post)):
            if verb in rest:
                repo_id, tail = rest.split(verb, 1)
                return handler(repo_type, repo_id, tail, query, body)
        return self._info(repo_type, rest, "main", query, body)

    def _info(self, repo_type, repo_id, revision, query, body) -> int:
        repo = self._repo(repo_type, repo_id)
        commit = repo and self._commit(repo, revision)
        if not commit:
            return 404
        siblings = [{"rfilename": p} for p in sorted(commit.files)]
        self._send(200, {"id": repo_id, "sha": commit.oid, "private": repo.private, "siblings": siblings})
        return 200

    def _tree(self, repo_type, repo_id, tail, query, body) -> int:
        revision = tail.split("/", 1)[0]
        repo = self._repo(repo_type, repo_id)
        commit = repo and self._commit(repo, revision)
        if not commit:
            return 404
        entries = []
        for rel, data in sorted(commit.files.items()):
            size = self.hub.listed_sizes.get(rel, len(data))
            entry = {"type": "file", "path": rel, "size": size, "oid": git_blob_sha1(data)}
            if is_lfs(rel, len(data)):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": size, "pointerSize": 134}
            entries.append(entry)
        self._send(200, entries)
        return 200

    def resolve(self, path: str, query: dict, body: bytes) -> int:
        head_only = self.command == "HEAD"
        if "/resolve/" not in path:
            self._error(404, None, f"no route for {self.command} {path}", head_only)
            return 404
        repo_type, rest = ("dataset", path[len("/datasets/"):]) if path.startswith("/datasets/") else ("model", path[1:])
        repo_id, tail = rest.split("/resolve/", 1)
        revision, rel = tail.split("/", 1)
        repo = self._repo(repo_type, repo_id, head_only)
        commit = repo and self._commit(repo, revision, head_only)
        if not commit:
            return 404
        if rel not in commit.files:
            self._error(404, "EntryNotFound", f"{rel} not found", head_only)
            return 404
        data = commit.files[rel]
        etag = hashlib.sha256(data).hexdigest() if is_lfs(rel, len(data)) else git_blob_sha1(data)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if is_lfs(rel, len(data)):
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": len(data)})
        if head_only:
            self._send(200, headers={**headers, "Content-Length": len(data)}, head_only=True)
            return 200
        return self._serve_bytes(rel, data, headers)

    def _serve_bytes(self, rel: str, data: bytes, headers: dict) -> int:
        with self.hub.lock:
            failures = self.hub.fail_get.get(rel, 0)
            if failures:
                self.hub.fail_get[rel] = failures - 1
        if failures:
            self._error(500, None, "injected server error")
            return 500
        wanted = self.headers.get("Range")
        if wanted:
            start_text, _, end_text = wanted.removeprefix("bytes=").partition("-")
            start, end = int(start_text), int(end_text) if end_text else len(data) - 1
            part = data[start:end + 1]
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
            self._send(206, headers=headers, body=part)
            return 206
        with self.hub.lock:
            cut = self.hub.cut_once.pop(rel, None)
        if cut is not None:  # promise the whole file, send `cut` bytes, hang up: an interrupted transfer
            self.send_response(200)
            for key, value in {**headers, "Content-Length": len(data)}.items():
                self.send_header(key, str(value))
            self.end_headers()
            self.wfile.write(data[:cut])
            self.wfile.flush()
            self.close_connection = True
            return 200
        self._send(200, headers=headers, body=data)
        return 200

    # ---- write API ----------------------------------------------------------------------------------
    def create_repo(self, path: str, query: dict, body: bytes) -> int:
        if not self._authorized():
            self._error(401, None, "Invalid credentials in Authorization header")
            return 401
        payload = json.loads(body)
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.hub.url}/{prefix}{repo_id}"
        with self.hub.lock:
            if (repo_type, repo_id) in self.hub.repos:
                self._send(409, {"error": "You already created this repo", "url": url})
                return 409
            repo = self.hub.add_repo(repo_id, repo_type, private=payload.get("visibility") == "private")
            repo.commit({".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}, "initial commit")
        self._send(200, {"url": url, "name": repo_id})
        return 200

    def validate_yaml(self, path: str, query: dict, body: bytes) -> int:
        content = json.loads(body)["content"]
        try:
            _, front, _ = content.split("---", 2)
            yaml.safe_load(front)
        except (ValueError, yaml.YAMLError) as err:
            self._send(400, {"errors": [{"message": str(err)}], "warnings": []})
            return 400
        self._send(200, {"errors": [], "warnings": []})
        return 200

    def _preupload(self, repo_type, repo_id, revision, query, body) -> int:
        if not self._authorized():
            self._error(401, None, "Invalid credentials in Authorization header")
            return 401
        repo = self._repo(repo_type, repo_id)
        commit = repo and self._commit(repo, revision)
        if not commit:
            return 404
        files = []
        for item in json.loads(body)["files"]:
            lfs = is_lfs(item["path"], item["size"])
            remote = commit.files.get(item["path"])
            oid = None
            if remote is not None:
                oid = hashlib.sha256(remote).hexdigest() if lfs else git_blob_sha1(remote)
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                          "shouldIgnore": False, "oid": oid})
        self._send(200, {"files": files, "commitOid": commit.oid})
        return 200

    def lfs_batch(self, path: str, query: dict, body: bytes) -> int:
        if not path.endswith(".git/info/lfs/objects/batch"):
            self._error(404, None, f"no route for POST {path}")
            return 404
        if not self._authorized():
            self._error(401, None, "Invalid credentials in Authorization header")
            return 401
        objects = []
        for obj in json.loads(body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.hub.lfs_store:
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.url}/lfs-upload/{obj['oid']}"},
                    "verify": {"href": f"{self.hub.url}/lfs-verify/{obj['oid']}"},
                }
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})
        return 200

    def lfs_upload(self, path: str, query: dict, body: bytes) -> int:
        oid = path.rsplit("/", 1)[1]
        if hashlib.sha256(body).hexdigest() != oid:
            self._error(400, None, "sha256 mismatch")
            return 400
        with self.hub.lock:
            self.hub.lfs_store[oid] = body
        self._send(200, body=b"")
        return 200

    def lfs_verify(self, path: str, query: dict, body: bytes) -> int:
        oid = path.rsplit("/", 1)[1]
        status = 200 if oid in self.hub.lfs_store else 404
        self._send(status, {"success": status == 200})
        return status

    def _commit_post(self, repo_type, repo_id, revision, query, body) -> int:
        if not self._authorized():
            self._error(401, None, "Invalid credentials in Authorization header")
            return 401
        repo = self._repo(repo_type, repo_id)
        if repo is None or self._commit(repo, revision) is None:
            return 404
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = lines[0]["value"]
        files, deleted = {}, []
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.hub.lfs_store:
                    self._error(400, None, f"LFS object {value['oid']} was never uploaded")
                    return 400
                files[value["path"]] = self.hub.lfs_store[value["oid"]]
            elif line["key"] in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
        with self.hub.lock:
            oid = repo.commit(files, header["summary"], branch=revision,
                              description=header.get("description", ""), replace=False)
            for rel in deleted:
                repo.commits[oid].files.pop(rel, None)
            self.hub.write_received(repo)
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        self._send(200, {"success": True, "commitOid": oid, "commitUrl": f"{self.hub.url}/{prefix}{repo_id}/commit/{oid}"})
        return 200


ROUTES = {
    "GET": (("/api/", _HubHandler.api_repo), ("*", _HubHandler.resolve)),
    "HEAD": (("*", _HubHandler.resolve),),
    "POST": (("/api/repos/create", _HubHandler.create_repo), ("/api/validate-yaml", _HubHandler.validate_yaml),
             ("/lfs-verify/", _HubHandler.lfs_verify), ("/api/", _HubHandler.api_repo),
             ("*", _HubHandler.lfs_batch)),
    "PUT": (("/lfs-upload/", _HubHandler.lfs_upload),),
}
