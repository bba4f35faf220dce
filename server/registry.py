"""An image's config read from its registry without pulling (what ``crane config`` does).

The only module that speaks the registry's HTTP API (OCI distribution / registry v2). Used to
learn an image's own HEALTHCHECK and USER when the image is not on the host: manifest (an index
or manifest list resolves to the engine's platform), then the config blob; and, for the deploy
plan, the digest a tag points at now (one HEAD of its manifest, :func:`read_digest`). Anonymous bearer
tokens are fetched as the registry's ``WWW-Authenticate`` challenge says (Docker Hub, GHCR,
Quay...), with the docker CLI's stored credentials when the engine's client has some.
Registries the engine treats as insecure (its ``InsecureRegistryCIDRs`` and index configs, which
by default cover 127.0.0.0/8) are tried over https without verification, then over plain http,
as the engine itself does. Docker Hub mirrors configured on the engine are tried first.

Everything is synchronous (``requests``, which docker-py already depends on) and bounded by
short timeouts; callers run it in a worker thread. Never raises for a registry's answer: the
result says ``present``, ``absent`` or ``unreachable`` and why.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

RegistryState = Literal["present", "absent", "unreachable"]

DOCKER_HUB = "docker.io"
_HUB_API = "registry-1.docker.io"
_MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ]
)
_MAX_BODY = 4 * 1024 * 1024
"""A manifest or config larger than this is not an image config we can use (memory stays bounded)."""
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
MAX_BACKOFF_S = 10.0
"""The longest one back-off on a registry's Retry-After (longer: the image's answer says so)."""
LOW_REMAINING = 10
"""RateLimit-Remaining at or below this is reported."""
_MAX_TAG_PAGES = 10


@dataclass(frozen=True)
class Reference:
    """A normalised image reference: registry host, repository path, tag or digest."""

    registry: str
    repository: str
    reference: str
    """Tag or digest (``sha256:...``)."""

    @property
    def api_host(self) -> str:
        return _HUB_API if self.registry == DOCKER_HUB else self.registry


def is_loopback(ref: str) -> bool:
    """Whether ``ref``'s registry is on this machine's loopback (reachable only from the engine's host)."""
    registry = parse_reference(ref).registry
    # "[::1]:5000" and "[::1]" alike: an IPv6 host is bracketed, so its port follows the "]".
    host = registry.split("]", 1)[0] + "]" if registry.startswith("[") else registry.rsplit(":", 1)[0]
    return host in ("localhost", "[::1]") or host.startswith("127.")


def parse_reference(ref: str) -> Reference:
    """Split ``ref`` as the docker CLI does (``redis`` is ``docker.io/library/redis:latest``)."""
    name, _, digest = ref.partition("@")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, name
    colon = path.rfind(":")
    tag = None
    if colon > path.rfind("/"):
        path, tag = path[:colon], path[colon + 1 :]
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return Reference(registry=registry, repository=path.lower() if registry == DOCKER_HUB else path,
                     reference=digest or tag or "latest")


@dataclass(frozen=True)
class RegistryView:
    """What the engine says about registries: its platform, insecure registries, Hub mirrors."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None
    insecure_cidrs: tuple[str, ...] = ("127.0.0.0/8",)
    insecure_names: frozenset[str] = frozenset()
    mirrors: tuple[str, ...] = ()

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> RegistryView:
        """From the engine's ``/info``: ``Architecture`` (uname -m), ``OSType`` and ``RegistryConfig``."""
        arch, variant = _platform(str(info.get("Architecture") or "x86_64"))
        config = info.get("RegistryConfig") or {"InsecureRegistryCIDRs": ["127.0.0.0/8"]}  # the engine's default
        indexes = config.get("IndexConfigs") or {}
        insecure = {name for name, idx in indexes.items() if not (idx or {}).get("Secure", True)}
        return cls(
            os=str(info.get("OSType") or "linux"),
            architecture=arch,
            variant=variant,
            insecure_cidrs=tuple(config.get("InsecureRegistryCIDRs") or ()),
            insecure_names=frozenset(insecure),
            mirrors=tuple(str(m).rstrip("/") for m in (config.get("Mirrors") or ())),
        )

    def insecure(self, host: str) -> bool:
        """Plain http / unverified TLS allowed for ``host`` (``name:port``), as the engine decides."""
        if host in self.insecure_names:
            return True
        name = _hostname(host)
        if name == "localhost":
            name = "127.0.0.1"
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            return False
        for cidr in self.insecure_cidrs:
            try:
                if ip in ipaddress.ip_network(cidr, strict=False):
                    return True
            except ValueError:
                continue
        return False


def _hostname(host: str) -> str:
    """``name:port`` / ``[v6]:port`` / ``name`` -> the name (the engine resolves names; we only
    compare literal addresses and ``localhost`` with its CIDRs, and names with its index configs)."""
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.split(":", 1)[0] if host.count(":") == 1 else host


def _platform(machine: str) -> tuple[str, str | None]:
    """``uname -m`` as the engine reports it -> (GOARCH, variant)."""
    return {
        "x86_64": ("amd64", None),
        "amd64": ("amd64", None),
        "aarch64": ("arm64", None),
        "arm64": ("arm64", None),
        "armv7l": ("arm", "v7"),
        "armv6l": ("arm", "v6"),
        "i386": ("386", None),
        "i686": ("386", None),
        "ppc64le": ("ppc64le", None),
        "s390x": ("s390x", None),
        "riscv64": ("riscv64", None),
    }.get(machine, (machine, None))


@dataclass(frozen=True)
class ImageConfig:
    """The outcome of one registry read."""

    state: RegistryState
    detail: str
    config: dict[str, Any] | None = None
    """The image config's ``config`` object (``Healthcheck``, ``User``, ``ExposedPorts``...), when read."""
    digest: str | None = None
    created: str | None = None
    """The config's ``created`` time (RFC 3339), when it has one."""


Credentials = Callable[[str], tuple[str, str] | None]
"""Registry host -> (username, password) from the docker CLI's config, or None."""


class _Refused(Exception):
    def __init__(self, state: RegistryState, detail: str) -> None:
        super().__init__(detail)
        self.state = state
        self.detail = detail


@dataclass
class _Client:
    ref: Reference
    base: str
    timeout_s: float
    deadline: float
    verify: bool
    credentials: tuple[str, str] | None
    session: Any
    token: str | None = None
    basic: bool = False
    rate_limit: str | None = None
    """What the registry's rate-limit headers said, when worth saying (low quota, a back-off)."""

    def get(self, path: str, accept: str | None = None, method: str = "GET") -> Any:
        headers = {"Accept": accept} if accept else {}
        response = self._get(path, headers, method)
        if response.status_code == 401 and (self.token is None and not self.basic):
            self._authenticate(response.headers.get("WWW-Authenticate") or "")
            response = self._get(path, headers, method)
        if response.status_code in (429, 503) and response.headers.get("Retry-After"):
            # Rate limited: back off once when the registry's wait fits our deadline, else say so.
            wait = _retry_after(response.headers.get("Retry-After"))
            if wait is None or wait > min(MAX_BACKOFF_S, self.deadline - time.monotonic() - 0.5):
                asked = response.headers.get("Retry-After")
                self.rate_limit = f"rate limited (HTTP {response.status_code}): retry after {asked}"
                raise _Refused("unreachable", f"registry {self.rate_limit}")
            time.sleep(wait)
            self.rate_limit = f"rate limited: backed off {wait:g}s as the registry asked (Retry-After)"
            response = self._get(path, headers, method)
        self._note_limits(response)
        if response.status_code == 404:
            raise _Refused("absent", f"registry answered 404 for {self.ref.repository}:{self.ref.reference} "
                           "(manifest unknown)")
        if response.status_code in (401, 403):
            login = "" if self.credentials else " (private: it needs docker login)"
            raise _Refused("absent", f"registry refused access ({response.status_code}){login}")
        if response.status_code >= 400:
            raise _Refused("unreachable", f"registry answered HTTP {response.status_code}")
        return response

    def _note_limits(self, response: Any) -> None:
        """Docker Hub's ``RateLimit-Remaining: 97;w=21600`` (and the IETF draft's plain number):
        low or exhausted pull quotas are said, so the caller stops before the registry refuses."""
        if response.status_code == 429:
            self.rate_limit = self.rate_limit or "rate limited (HTTP 429), no Retry-After given"
            raise _Refused("unreachable", f"registry {self.rate_limit}")
        raw = response.headers.get("RateLimit-Remaining")
        if not raw:
            return
        try:
            remaining = int(str(raw).split(";", 1)[0].strip())
        except ValueError:
            return
        if remaining <= LOW_REMAINING:
            limit = str(response.headers.get("RateLimit-Limit") or "?").split(";", 1)[0]
            self.rate_limit = (f"rate limited: quota used up (0 of {limit} requests left)" if remaining <= 0 else
                               f"registry quota low: {remaining} of {limit} requests left")

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0.05:
            raise _Refused("unreachable", f"could not verify: the registry did not answer within {self.timeout_s:g}s")
        return left

    def _get(self, url_or_path: str, headers: dict[str, str], method: str = "GET") -> Any:
        url = url_or_path if url_or_path.startswith("http") else self.base + url_or_path
        if self.token:
            headers = {**headers, "Authorization": f"Bearer {self.token}"}
        auth = self.credentials if self.basic else None
        left = self._remaining()
        response = self.session.request(method, url, headers=headers, auth=auth,
                                        timeout=(min(left, self.timeout_s), left), verify=self.verify, stream=True,
                                        allow_redirects=True)
        return response

    def _authenticate(self, challenge: str) -> None:
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if not self.credentials:
                raise _Refused("absent", "registry asks for a login (basic auth) and no credentials are stored")
            self.basic = True
            return
        if scheme != "bearer":
            raise _Refused("unreachable", f"registry asks for an unknown authentication scheme {scheme!r}")
        params = dict(_CHALLENGE.findall(challenge))
        realm = params.get("realm")
        if not realm:
            raise _Refused("unreachable", "registry's bearer challenge names no realm")
        query = {"scope": f"repository:{self.ref.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        left = self._remaining()
        response = self.session.get(realm, params=query, auth=self.credentials,
                                    timeout=(min(left, self.timeout_s), left), verify=self.verify, stream=True)
        if response.status_code >= 400:
            raise _Refused("absent" if response.status_code in (401, 403) else "unreachable",
                           f"token service answered HTTP {response.status_code}")
        body = _json(response)
        self.token = str(body.get("token") or body.get("access_token") or "") or None
        if not self.token:
            raise _Refused("unreachable", "token service gave no token")


def _json(response: Any) -> dict[str, Any]:
    raw = response.raw.read(_MAX_BODY + 1, decode_content=True)  # every request streams: the size stays bounded
    if len(raw) > _MAX_BODY:
        raise _Refused("unreachable", f"registry sent more than {_MAX_BODY} bytes for a manifest or config")
    try:
        data = json.loads(raw)
    except ValueError:
        raise _Refused("unreachable", "registry sent something that is not JSON") from None
    if not isinstance(data, dict):
        raise _Refused("unreachable", "registry sent JSON that is not an object")
    return data


@dataclass(frozen=True)
class TagDigest:
    """The digest a tag points at in its registry now (what ``docker pull`` of the tag would get
    and record in the image's RepoDigests), or why it is not known."""

    state: RegistryState
    detail: str
    digest: str | None = None
    rate_limit: str | None = None


class _Answer(Protocol):
    @property
    def state(self) -> RegistryState: ...


R = TypeVar("R", bound=_Answer)


def read_image_config(
    ref: str, view: RegistryView, *, timeout_s: float = 4.0, credentials: Credentials | None = None
) -> ImageConfig:
    """The image's config from its registry: manifest (index -> the engine's platform), then config blob.

    Bounded by ``timeout_s`` in total; never raises for the registry's answers or silence.
    """
    return _each_endpoint(ref, view, timeout_s, credentials, _read,
                          ImageConfig("unreachable", "could not verify: no registry endpoint was tried"))


def _each_endpoint(ref: str, view: RegistryView, timeout_s: float, credentials: Credentials | None,
                   read: Callable[[_Client, RegistryView], R], nothing: R) -> R:
    """``read`` on the registry's endpoints in the engine's order (Hub mirrors first; https, then
    plain http where the engine allows it) until one answers; within ``timeout_s`` in total."""
    import requests

    parsed = parse_reference(ref)
    deadline = time.monotonic() + timeout_s
    hosts = [*(m for m in view.mirrors if parsed.registry == DOCKER_HUB), parsed.api_host]
    creds = credentials(parsed.registry) if credentials else None
    last = nothing
    with requests.Session() as session:
        session.trust_env = True
        for host in hosts:
            if "://" in host:
                bases = [(host, True)]
            elif view.insecure(host):
                bases = [(f"https://{host}", False), (f"http://{host}", True)]
            else:
                bases = [(f"https://{host}", True)]
            for base, verify in bases:
                client = _Client(parsed, base.rstrip("/"), timeout_s, deadline, verify, creds, session)
                result = read(client, view)
                if result.state != "unreachable" or time.monotonic() >= deadline:
                    return result
                last = result
    return last


def read_digest(
    ref: str, view: RegistryView, *, timeout_s: float = 4.0, credentials: Credentials | None = None
) -> TagDigest:
    """One HEAD of the tag's manifest (nothing is downloaded; a HEAD does not count as a pull on
    Docker Hub); a registry that sends no Docker-Content-Digest gets one GET, hashed.

    Bounded by ``timeout_s`` in total; never raises for the registry's answers or silence.
    """
    return _each_endpoint(ref, view, timeout_s, credentials, _read_digest,
                          TagDigest("unreachable", "could not verify: no registry endpoint was tried"))


def _read_digest(client: _Client, view: RegistryView) -> TagDigest:
    import hashlib

    import requests

    ref = client.ref
    path = f"/v2/{ref.repository}/manifests/{ref.reference}"
    try:
        digest = client.get(path, _MANIFEST_TYPES, method="HEAD").headers.get("Docker-Content-Digest")
        if not digest:
            raw = client.get(path, _MANIFEST_TYPES).raw.read(_MAX_BODY + 1, decode_content=True)
            if len(raw) > _MAX_BODY:
                return TagDigest("unreachable", f"registry sent more than {_MAX_BODY} bytes for a manifest")
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    except _Refused as exc:
        return TagDigest(exc.state, exc.detail, rate_limit=client.rate_limit)
    except requests.exceptions.Timeout:
        return TagDigest("unreachable", f"could not verify: the registry did not answer within {client.timeout_s:g}s")
    except requests.exceptions.SSLError as exc:
        return TagDigest("unreachable", f"could not verify: TLS failed ({_short(exc)})")
    except requests.exceptions.RequestException as exc:
        return TagDigest("unreachable", f"could not verify: {_short(exc)}")
    return TagDigest("present", f"registry {client.base.split('://', 1)[-1]} has it at {digest}", digest=str(digest),
                     rate_limit=client.rate_limit)


def _read(client: _Client, view: RegistryView) -> ImageConfig:
    import requests

    ref = client.ref
    try:
        response = client.get(f"/v2/{ref.repository}/manifests/{ref.reference}", _MANIFEST_TYPES)
        digest = response.headers.get("Docker-Content-Digest")
        manifest = _json(response)
        media = str(manifest.get("mediaType") or response.headers.get("Content-Type") or "")
        if "manifests" in manifest or "index" in media or "manifest.list" in media:
            chosen = _pick_platform(manifest.get("manifests") or [], view)
            if chosen is None:
                return ImageConfig("present", f"registry has {ref.repository}:{ref.reference} but not for "
                                   f"{view.os}/{view.architecture}", digest=digest)
            manifest = _json(client.get(f"/v2/{ref.repository}/manifests/{chosen}", _MANIFEST_TYPES))
        if manifest.get("schemaVersion") == 1:  # legacy: the config rides in the history
            history = manifest.get("history") or [{}]
            legacy = json.loads(history[0].get("v1Compatibility") or "{}")
            config, created = legacy.get("config") or {}, legacy.get("created")
        else:
            blob = str((manifest.get("config") or {}).get("digest") or "")
            if not blob:
                return ImageConfig("present", "registry's manifest names no config blob", digest=digest)
            whole = _json(client.get(f"/v2/{ref.repository}/blobs/{blob}"))
            config, created = whole.get("config") or {}, whole.get("created")
    except _Refused as exc:
        return ImageConfig(exc.state, exc.detail)
    except requests.exceptions.Timeout:
        return ImageConfig("unreachable", f"could not verify: the registry did not answer within {client.timeout_s:g}s")
    except requests.exceptions.SSLError as exc:
        return ImageConfig("unreachable", f"could not verify: TLS failed ({_short(exc)})")
    except requests.exceptions.RequestException as exc:
        return ImageConfig("unreachable", f"could not verify: {_short(exc)}")
    where = client.base.split("://", 1)[-1]
    return ImageConfig("present", f"registry {where} has it{' at ' + digest if digest else ''}; config read "
                       "without pulling", config=dict(config), digest=digest,
                       created=str(created) if created else None)


def _pick_platform(manifests: list[dict[str, Any]], view: RegistryView) -> str | None:
    """The digest of the entry for the engine's platform (variant preferred, attestations skipped)."""
    best: tuple[int, str] | None = None
    for entry in manifests:
        platform = entry.get("platform") or {}
        if platform.get("os") != view.os or platform.get("architecture") != view.architecture:
            continue
        score = 2 if view.variant and platform.get("variant") == view.variant else 1
        if view.variant and platform.get("variant") not in (None, view.variant):
            continue
        if best is None or score > best[0]:
            best = (score, str(entry.get("digest")))
    return best[1] if best else None


def _short(exc: BaseException) -> str:
    text = str(exc)
    match = re.search(r"\(Caused by (\w+)", text)
    return (match.group(1) if match else text)[:160]


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is not worth a wait here: None)."""
    try:
        return max(0.0, float(str(value).strip()))
    except ValueError:
        return None


@dataclass(frozen=True)
class TagList:
    """The tags a repository has in its registry (``GET /v2/<name>/tags/list``: no manifest is
    read, so nothing counts as a pull), or why they are not known."""

    state: RegistryState
    detail: str
    tags: tuple[str, ...] = ()
    rate_limit: str | None = None


def list_tags(
    ref: str, view: RegistryView, *, timeout_s: float = 6.0, credentials: Credentials | None = None
) -> TagList:
    """Every tag of ``ref``'s repository (paged by the registry's Link header, at most
    ``_MAX_TAG_PAGES`` pages). Never raises for the registry's answers or silence."""
    return _each_endpoint(ref, view, timeout_s, credentials, _list_tags,
                          TagList("unreachable", "could not list tags: no registry endpoint was tried"))


def _list_tags(client: _Client, view: RegistryView) -> TagList:
    import requests

    ref = client.ref
    path = f"/v2/{ref.repository}/tags/list?n=1000"
    tags: list[str] = []
    try:
        for _ in range(_MAX_TAG_PAGES):
            response = client.get(path)
            tags.extend(str(t) for t in (_json(response).get("tags") or []))
            link = _next_link(response.headers.get("Link"))
            if not link:
                break
            path = link
    except _Refused as exc:
        return TagList(exc.state, exc.detail, rate_limit=client.rate_limit)
    except requests.exceptions.Timeout:
        return TagList("unreachable", f"could not list tags within {client.timeout_s:g}s", rate_limit=client.rate_limit)
    except requests.exceptions.RequestException as exc:
        return TagList("unreachable", f"could not list tags: {_short(exc)}", rate_limit=client.rate_limit)
    return TagList("present", f"{len(tags)} tag(s)", tags=tuple(tags), rate_limit=client.rate_limit)


def _next_link(header: str | None) -> str | None:
    """``</v2/x/tags/list?last=a&n=1000>; rel="next"`` -> the path (same host only)."""
    if not header or 'rel="next"' not in header:
        return None
    match = re.match(r"\s*<([^>]+)>", header)
    if not match:
        return None
    target = match.group(1)
    return target if target.startswith("/v2/") else None
