"""The origin side: every netbootd offers its builds by content address to edges.

::

    GET /store/v1/builds                                  the index (store/origin_index.py)
    GET /store/v1/builds/{name}/{version}/manifest.json   a manifest, byte for byte
    GET /store/v1/blobs/sha256/{hash}                     one file's bytes (Range, ETag=hash)

Read-only and without a token, like ``/builds/...``: these are the same bytes any PXE client
may already fetch from this listener (docs/security.md). Every name is looked up in the
served catalog (an allow-list): a build must be in it, and a blob must be a file of one of
its builds; nothing from the request is joined onto a directory. An edge (netbootd/store/
origin_edge.py) lists only builds whose files it holds, and serves only blobs it holds.
"""

from __future__ import annotations

import weakref
from pathlib import Path

from aiohttp import web

from netbootd.core.model import Build, BuildCatalog
from netbootd.errors import NotFound
from netbootd.store.builds import HashCache
from netbootd.store.manifest import NAME_RE, SHA256_RE
from netbootd.store.origin_index import IndexEntry, index_json
from netbootd.store.origin_layout import is_edge_blob, manifest_path
from netbootd.web.boot_routes import RESPONDER
from netbootd.web.image_routes import IMMUTABLE

JSON = "application/json"


class _Catalogs:
    """Per served catalog (Worlds share one until the store changes): blob -> path, and the
    index entries, computed once (manifests are immutable); only an edge's pulled builds are
    looked at again, since their files arrive over time."""

    def __init__(self) -> None:
        self._blobs: weakref.WeakKeyDictionary[BuildCatalog, dict[str, Path]] = \
            weakref.WeakKeyDictionary()
        self._index: weakref.WeakKeyDictionary[
            BuildCatalog, list[tuple[IndexEntry, Build | None]]] = weakref.WeakKeyDictionary()
        self.hashes = HashCache()

    def blobs(self, catalog: BuildCatalog) -> dict[str, Path]:
        found = self._blobs.get(catalog)
        if found is None:
            found = {info.sha256: b.paths[f] for b in catalog.all()
                     for f, info in b.manifest.files.items()}
            self._blobs[catalog] = found
        return found

    def index(self, catalog: BuildCatalog, store: Path) -> list[IndexEntry]:
        entries = self._index.get(catalog)
        if entries is None:
            entries = []
            for b in catalog.all():
                try:
                    sha = self.hashes.sha256(manifest_path(store, b))
                except OSError:
                    continue  # removed since the catalog was read: gone at the next look
                pulled = any(is_edge_blob(p) for p in b.paths.values())
                entries.append((IndexEntry(b.name, b.version, sha,
                                           sum(i.size for i in b.manifest.files.values())),
                                b if pulled else None))
            self._index[catalog] = entries
        # A pulled build is offered onwards only once every file of it is here.
        return [e for e, pulled in entries
                if pulled is None or all(p.is_file() for p in pulled.paths.values())]


CATALOGS = web.AppKey("origin_catalogs", _Catalogs)


def _store(request: web.Request) -> Path:
    store = request.app[RESPONDER].watcher.store_dir
    if store is None:  # quick mode: a fixed one-off build, nothing to offer edges
        raise web.HTTPNotFound(text="this server has no image store to offer\n")
    return store


async def index(request: web.Request) -> web.Response:
    store = _store(request)
    catalog = request.app[RESPONDER].refresh().catalog
    return web.Response(text=index_json(request.app[CATALOGS].index(catalog, store)),
                        content_type=JSON)


async def manifest(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    name, version = request.match_info["name"], request.match_info["version"]
    if not (NAME_RE.match(name) and NAME_RE.match(version)):
        raise web.HTTPNotFound(text="no such build\n")
    try:
        build = request.app[RESPONDER].build(f"{name}/{version}")
    except NotFound as e:
        raise web.HTTPNotFound(text=f"{e}\n") from e
    return web.FileResponse(manifest_path(store, build),
                            headers={"Cache-Control": IMMUTABLE, "Content-Type": JSON})


class BlobResponse(web.FileResponse):
    """A blob; its ETag is its sha256 (the same on every server holding it) instead of
    aiohttp's mtime-and-size tag, which differs between an origin and its edges."""

    def __init__(self, path: Path, sha256: str) -> None:
        super().__init__(path, headers={"Cache-Control": IMMUTABLE,
                                        "Content-Type": "application/octet-stream"})
        self.sha256 = sha256


async def _blob_etag(request: web.Request, response: web.StreamResponse) -> None:
    # Runs after FileResponse set its own tag and before the headers go out.
    if isinstance(response, BlobResponse):
        response.headers["ETag"] = f'"{response.sha256}"'


async def blob(request: web.Request) -> web.StreamResponse:
    _store(request)
    sha = request.match_info["hash"]
    if not SHA256_RE.match(sha):
        raise web.HTTPNotFound(text="not a sha256 (64 lower-case hex digits)\n")
    path = request.app[CATALOGS].blobs(request.app[RESPONDER].refresh().catalog).get(sha)
    if path is None or not path.is_file():
        raise web.HTTPNotFound(text=f"no blob {sha} here\n")
    inm = request.headers.get("If-None-Match", "")
    if sha in {t.strip().removeprefix("W/").strip('"') for t in inm.split(",")}:
        return web.Response(status=304, headers={"ETag": f'"{sha}"'})
    return BlobResponse(path, sha)


def add_routes(app: web.Application) -> None:
    app[CATALOGS] = _Catalogs()
    app.on_response_prepare.append(_blob_etag)
    app.router.add_get("/store/v1/builds", index)
    app.router.add_get("/store/v1/builds/{name}/{version}/manifest.json", manifest)
    app.router.add_get("/store/v1/blobs/sha256/{hash}", blob)
