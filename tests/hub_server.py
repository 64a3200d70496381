"""A Hugging Face Hub look-alike on the standard library, for tests against real HTTP.

It implements the parts of the Hub API that ``huggingface_hub`` 2.4 calls for ``hf_hub_download``,
``snapshot_download``, ``repo_info``, ``list_repo_tree``, ``create_repo``, ``create_branch``,
``create_tag``, ``upload_folder`` and ``create_commit``:

- ``HEAD /``: 200 (the reachability probe of ``pecmae_hub.storage.connectivity``; not logged);
- ``HEAD/GET /{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag`` (git blob sha1; for LFS-like
  files the sha256 plus ``X-Linked-Etag``/``X-Linked-Size``), ``Content-Length``, ``Range``;
- errors the way the Hub signals them: ``X-Error-Code: RepoNotFound`` (401), ``RevisionNotFound``
  (404), ``EntryNotFound`` (404, with ``X-Repo-Commit`` so the client caches the absence);
- ``/api/models/{repo}[/revision/{rev}]``, ``/tree/{rev}[/{path}]``, ``/refs``, ``POST /api/repos/create``,
  ``POST .../preupload/{rev}`` (always ``regular``), ``POST .../commit/{rev}`` (NDJSON, base64),
  ``POST .../branch/{name}``, ``POST .../tag/{rev}``, ``POST /api/validate-yaml``;
- dataset repos (``repo_type="dataset"``): the same under ``/api/datasets/...`` and
  ``/datasets/{repo}/resolve/...``. They live apart from model repos: ``add_files(...,
  repo_type="dataset")`` stores them under the key ``datasets/{repo_id}`` of :attr:`HubServer.repos`.
  That is all ``datasets.load_dataset(repo, streaming=True)`` (5.x) needs to stream parquet shards: the
  card, ``/api/datasets/{repo}/revision/{rev}``, ``/tree/{rev}[/{path}]`` and ranged ``resolve`` reads,
  which :attr:`HubServer.ranges` records (a streamed read shows up there, a download does not).

Repos live in memory with git-like history: every commit is a full snapshot keyed by a 40-hex sha;
branches and tags point at commits. Every request is logged in :attr:`HubServer.requests` so tests can
assert that a cache was used. Request bodies are always read in full (keep-alive depends on it).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.ckpt", "*.wav", "*.flac", "*.ogg", "*.npy")
LFS_MIN_SIZE = 10 * 1024 * 1024


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, data: bytes) -> bool:
    return len(data) >= LFS_MIN_SIZE or any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in LFS_PATTERNS)


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> str | None:
        if rev in self.branches:
            return self.branches[rev]
        if rev in self.tags:
            return self.tags[rev]
        return rev if rev in self.commits else None


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


class HubServer:
    """In-memory Hub on ``127.0.0.1:port`` (``port=0``: any free port). ``root`` preloads ``root/ORG/NAME`` folders."""

    def __init__(self, port: int = 0, root: str | Path | None = None, tokens: set[str] | None = None):
        self.port = port
        self.repos: dict[str, Repo] = {}
        self.tokens = set(tokens or ())  # accepted tokens for private repos (any token if empty)
        self.requests: list[tuple[str, str]] = []
        self.ranges: list[tuple[str, str]] = []  # (path, Range header) of partial GETs: what streaming reads
        self._lock = threading.RLock()
        self._counter = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if root is not None:
            for folder in sorted(Path(root).glob("*/*")):
                if folder.is_dir():
                    self.add_folder(f"{folder.parent.name}/{folder.name}", folder)

    # ---- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> HubServer:
        if self._httpd is None:
            handler = type("BoundHandler", (_Handler,), {"hub": self})
            self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
            self._httpd.daemon_threads = True
            self.port = self._httpd.server_address[1]
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def reset(self) -> None:
        with self._lock:
            self.repos.clear()
            self.requests.clear()
            self.ranges.clear()

    def count(self, method: str | None = None, contains: str = "") -> int:
        """Number of logged requests, optionally of one method and whose path contains ``contains``."""
        return sum(1 for m, p in list(self.requests) if (method is None or m == method) and contains in p)

    # ---- repository content ----------------------------------------------------------------------
    @staticmethod
    def repo_key(repo_id: str, repo_type: str | None = "model") -> str:
        """Key of a repo in :attr:`repos`: the id for a model, ``datasets/{id}`` for a dataset."""
        return repo_id if repo_type in (None, "model") else f"{repo_type}s/{repo_id}"

    def create_repo(self, repo_id: str, private: bool = False, repo_type: str | None = "model") -> Repo:
        key = self.repo_key(repo_id, repo_type)
        with self._lock:
            if key not in self.repos:
                repo = self.repos[key] = Repo(key, private=private)
                self._commit(repo, "main", {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})
            return self.repos[key]

    def add_files(
        self,
        repo_id: str,
        files: dict[str, bytes],
        branch: str = "main",
        tag: str | None = None,
        deletions: tuple[str, ...] = (),
        private: bool = False,
        repo_type: str | None = "model",
    ) -> str:
        """Commit ``files`` (path -> bytes) on ``branch`` (created from main if new); returns the commit sha."""
        with self._lock:
            repo = self.create_repo(repo_id, private=private, repo_type=repo_type)
            if branch not in repo.branches:
                repo.branches[branch] = repo.branches["main"]
            sha = self._commit(repo, branch, files, deletions)
            if tag:
                repo.tags[tag] = sha
            return sha

    def add_folder(self, repo_id: str, folder: str | Path, **kwargs) -> str:
        """Commit every file under ``folder`` (relative paths kept) as one commit."""
        folder = Path(folder)
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        return self.add_files(repo_id, files, **kwargs)

    def _commit(self, repo: Repo, branch: str, files: dict[str, bytes], deletions=()) -> str:
        parent = repo.branches.get(branch)
        snapshot = dict(repo.commits.get(parent, {}))
        for path in deletions:
            for key in [k for k in snapshot if k == path or k.startswith(path.rstrip("/") + "/")]:
                del snapshot[key]
        snapshot.update(files)
        self._counter += 1
        digest = hashlib.sha1(f"{repo.repo_id}|{parent}|{self._counter}|{time.time_ns()}".encode())
        for path in sorted(snapshot):
            digest.update(path.encode() + b"\0" + hashlib.sha1(snapshot[path]).digest())
        sha = digest.hexdigest()
        repo.commits[sha] = snapshot
        repo.branches[branch] = sha
        return sha

    def _lookup(self, repo_id: str, rev: str | None, authorization: str | None) -> tuple[Repo, str]:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized(authorization)):
            raise HubError(401, "RepoNotFound", f"Repository not found: {repo_id}")
        sha = repo.resolve(rev or "main")
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo, sha

    def _authorized(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        return not self.tokens or authorization[7:] in self.tokens


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head_only: bool = False) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body and not head_only:
            self.wfile.write(body)

    def _json(self, status: int, data, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _dispatch(self, method: str) -> None:
        body = self._read_body()
        split = urlsplit(self.path)
        if method == "HEAD" and split.path == "/":  # the reachability probe: answered, not an API call to log
            return self._send(200, b"", {"Content-Type": "text/html"}, head_only=True)
        self.hub.requests.append((method, split.path))
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        parts = [unquote(p) for p in split.path.split("/")[1:]]
        try:
            with self.hub._lock:
                self._route(method, parts, query, body)
        except HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            if err.commit:
                headers["X-Repo-Commit"] = err.commit
            body = b"" if method == "HEAD" else json.dumps({"error": err.message}).encode()
            self._send(err.status, body, headers)

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # ---- routing ---------------------------------------------------------------------------------
    def _route(self, method: str, parts: list[str], query: dict, body: bytes) -> None:
        auth = self.headers.get("Authorization")
        if parts[:2] == ["api", "agent-harnesses"]:
            return self._json(200, {"standardEnvVars": [], "harnesses": {}})
        if parts[:2] == ["api", "validate-yaml"] and method == "POST":
            return self._json(200, {"errors": [], "warnings": []})
        if parts[:2] == ["api", "whoami-v2"]:
            if not self.hub._authorized(auth):
                raise HubError(401, None, "Invalid credentials in Authorization header")
            return self._json(200, {"type": "user", "name": "pecmae-tester", "orgs": [], "auth": {}})
        if parts[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo(json.loads(body or b"{}"), auth)
        if len(parts) >= 4 and parts[:2] == ["api", "models"]:
            repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
            return self._api(method, repo_id, rest, query, body, auth)
        if len(parts) >= 4 and parts[:2] == ["api", "datasets"]:
            return self._api(method, f"datasets/{parts[2]}/{parts[3]}", parts[4:], query, body, auth)
        if len(parts) >= 6 and parts[0] == "datasets" and parts[3] == "resolve" and method in ("HEAD", "GET"):
            return self._resolve(method, f"datasets/{parts[1]}/{parts[2]}", parts[4], "/".join(parts[5:]), auth)
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("HEAD", "GET"):
            return self._resolve(method, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), auth)
        raise HubError(404, None, f"no route for {method} /{'/'.join(parts)}")

    def _create_repo(self, payload: dict, auth) -> None:
        if not self.hub._authorized(auth) and self.hub.tokens:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        repo_id = f"{payload.get('organization') or 'pecmae-tester'}/{payload['name']}"
        repo_type = payload.get("type") or "model"
        key = self.hub.repo_key(repo_id, repo_type)
        url = f"{self.hub.url}/{key}"
        if key in self.hub.repos:
            return self._json(409, {"error": f"You already created this {repo_type} repo", "url": url})
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        self.hub.create_repo(repo_id, private=private, repo_type=repo_type)
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _resolve(self, method: str, repo_id: str, rev: str, path: str, auth) -> None:
        repo, sha = self.hub._lookup(repo_id, rev, auth)
        files = repo.commits[sha]
        if path not in files:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}", commit=sha)
        data = files[path]
        headers = {"X-Repo-Commit": sha, "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if is_lfs(path, data):
            digest = hashlib.sha256(data).hexdigest()
            headers.update({"ETag": f'"{digest}"', "X-Linked-Etag": f'"{digest}"', "X-Linked-Size": str(len(data))})
        else:
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
        status, rng = 200, self.headers.get("Range")
        if rng and rng.startswith("bytes=") and method == "GET":
            self.hub.ranges.append((path, rng))
            start_s, _, end_s = rng[6:].partition("-")
            start, end = int(start_s or 0), int(end_s) if end_s else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        headers["Content-Length"] = str(len(data))
        self._send(status, data, headers, head_only=(method == "HEAD"))

    def _entry(self, path: str, data: bytes) -> dict:
        entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
        if is_lfs(path, data):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def _api(self, method: str, repo_id: str, rest: list[str], query: dict, body: bytes, auth) -> None:
        action = rest[0] if rest else ""
        if method == "GET" and action in ("", "revision"):
            repo, sha = self.hub._lookup(repo_id, rest[1] if action else None, auth)
            files = repo.commits[sha]
            siblings = [{"rfilename": p, "size": len(d)} for p, d in sorted(files.items())]
            repo_id = repo_id.removeprefix("datasets/")
            return self._json(
                200,
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": sha,
                    "private": repo.private,
                    "siblings": siblings,
                    "tags": [],
                    "lastModified": "2024-01-01T00:00:00.000Z",
                },
            )
        if method == "GET" and action == "tree":
            repo, sha = self.hub._lookup(repo_id, rest[1], auth)
            return self._tree(repo.commits[sha], "/".join(rest[2:]).strip("/"), query)
        if method == "GET" and action == "refs":
            repo, _ = self.hub._lookup(repo_id, None, auth)

            def ref(kind, name, sha):
                return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}

            return self._json(
                200,
                {
                    "branches": [ref("heads", n, s) for n, s in repo.branches.items()],
                    "tags": [ref("tags", n, s) for n, s in repo.tags.items()],
                    "converts": [],
                },
            )
        if method == "POST" and action == "preupload":
            repo, sha = self.hub._lookup(repo_id, rest[1], auth)
            files = repo.commits[sha]
            out = [
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(files[f["path"]]) if f["path"] in files else None,
                }
                for f in json.loads(body)["files"]
            ]
            return self._json(200, {"files": out, "commitOid": sha})
        if method == "POST" and action == "commit":
            return self._commit(repo_id, rest[1], body, auth)
        if method == "POST" and action == "branch":
            repo, _ = self.hub._lookup(repo_id, None, auth)
            name, payload = rest[1], json.loads(body or b"{}")
            if name in repo.branches:
                raise HubError(409, None, f"Reference already exists: refs/heads/{name}")
            _, start = self.hub._lookup(repo_id, payload.get("startingPoint") or "main", auth)
            repo.branches[name] = start
            return self._json(200, {})
        if method == "POST" and action == "tag":
            repo, sha = self.hub._lookup(repo_id, rest[1], auth)
            tag = json.loads(body)["tag"]
            if tag in repo.tags:
                raise HubError(409, None, f"Tag already exists: {tag}")
            repo.tags[tag] = sha
            return self._json(200, {})
        raise HubError(404, None, f"unsupported API call {method} {action} on {repo_id}")

    def _tree(self, files: dict[str, bytes], prefix: str, query: dict) -> None:
        recursive = query.get("recursive", "false").lower() in ("1", "true")
        base = prefix + "/" if prefix else ""
        if prefix and not any(p.startswith(base) for p in files):
            raise HubError(404, "EntryNotFound", f"{prefix} does not exist")
        entries, folders = [], set()
        for path, data in sorted(files.items()):
            if not path.startswith(base):
                continue
            parts = path[len(base) :].split("/")
            for depth in range(1, len(parts)):
                if recursive or depth == 1:
                    folders.add(base + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entries.append(self._entry(path, data))
        dirs = [{"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest()} for d in sorted(folders)]
        self._json(200, dirs + entries)

    def _commit(self, repo_id: str, rev: str, body: bytes, auth) -> None:
        repo, _ = self.hub._lookup(repo_id, None, auth)
        if rev not in repo.branches:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev} (create the branch first)")
        files, deletions, header = {}, [], {}
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                deletions.append(value["path"])
            else:
                raise HubError(400, None, f"this test Hub does not support commit operation {key!r}")
        parent = header.get("parentCommit")
        if parent and parent != repo.branches[rev]:
            raise HubError(412, None, f"parent commit {parent} is not the head of {rev}")
        sha = self.hub._commit(repo, rev, files, tuple(deletions))
        self._json(
            200,
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}",
                "pullRequestUrl": None,
            },
        )
