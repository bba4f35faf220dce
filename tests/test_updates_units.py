"""check_updates' and update_stack's rules at our own seams: tag shapes, where a new tag is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.errors import DsmError
from server.updates.check import _age_days, with_tag
from server.updates.files import apply_edits, plan_edit, restore
from server.updates.versions import newer, newest_within

TAGS = ["1.2.3", "1.2.4", "1.2.10", "1.3.0", "2.0.0", "1.3.0-rc1", "1.2.4-alpine", "1.2.5-alpine", "latest",
        "1.4", "v1.2.9", "2.0.0-alpine3.19"]


def test_only_tags_of_the_same_shape_are_newer() -> None:
    assert newer("1.2.3", TAGS) == [("2.0.0", "major"), ("1.3.0", "minor"), ("1.2.10", "patch"), ("1.2.4", "patch")]
    assert newer("1.2.3-alpine", TAGS) == [("1.2.5-alpine", "patch"), ("1.2.4-alpine", "patch")]
    assert newer("1.3", TAGS) == [("1.4", "minor")]
    assert newer("latest", TAGS) == [] and newer("1.3.0-rc1", TAGS) == []
    assert newest_within("1.2.3", TAGS, "patch") == "1.2.10"
    assert newest_within("1.2.3", TAGS, "minor") == "1.3.0"
    assert newest_within("1.2.3", TAGS, "major") == "2.0.0"
    assert newest_within("2.0.0", TAGS, "major") is None


def test_with_tag_and_age() -> None:
    assert with_tag("127.0.0.1:5000/a/web:1.0", "1.1") == "127.0.0.1:5000/a/web:1.1"
    assert with_tag("redis", "7") == "redis:7"
    assert _age_days("1970-01-01T00:00:00Z") is None and _age_days(None) is None
    age = _age_days("2020-01-02T03:04:05.123456789Z")
    assert age is not None and age > 365


def test_a_tag_goes_into_env_when_interpolated_and_comments_stay(tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text("# my stack\nservices:\n  api:  # the api\n    image: reg/acme/api:${API_TAG:-1.0}\n"
                       "    ports:\n      - '80:80'   # public\n  web:\n    image: \"reg/acme/web:1.0\"  # pinned\n")
    (tmp_path / ".env").write_text("# versions\nAPI_TAG=1.0   # keep me\nOTHER='x'\n")
    edits = [plan_edit(tmp_path, [compose], "api", "reg/acme/api:1.2"),
             plan_edit(tmp_path, [compose], "web", "reg/acme/web:1.1")]
    assert [(e.kind, e.key, e.value) for e in edits] == [("env", "API_TAG", "1.2"),
                                                         ("compose", "web", "reg/acme/web:1.1")]
    before = apply_edits(edits)
    assert (tmp_path / ".env").read_text() == "# versions\nAPI_TAG=1.2   # keep me\nOTHER='x'\n"
    assert compose.read_text() == ("# my stack\nservices:\n  api:  # the api\n    image: reg/acme/api:${API_TAG:-1.0}\n"
                                   "    ports:\n      - '80:80'   # public\n  web:\n    image: \"reg/acme/web:1.1\""
                                   "  # pinned\n")
    restore(before)
    assert "API_TAG=1.0   # keep me" in (tmp_path / ".env").read_text() and "web:1.0" in compose.read_text()


def test_a_variable_only_defaulted_gets_its_own_line_and_impossible_targets_refuse(tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text("services:\n  api:\n    image: reg/acme/api:${API_TAG:-1.0}\n")
    apply_edits([plan_edit(tmp_path, [compose], "api", "reg/acme/api:1.1")])
    assert (tmp_path / ".env").read_text() == "API_TAG=1.1\n"
    with pytest.raises(DsmError, match="cannot express"):
        plan_edit(tmp_path, [compose], "api", "other/api:2")
    for hostile in ("reg/acme/api:1\nADMIN_PASSWORD=x", "reg/acme/api:1 # x", "reg/acme/api:'1'", "reg/acme/api:$X"):
        with pytest.raises(DsmError, match="not an image reference"):
            plan_edit(tmp_path, [compose], "api", hostile)
    assert (tmp_path / ".env").read_text() == "API_TAG=1.1\n"


class _Response:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code, self.headers = status, headers


class _Session:
    """Answers in order (the registry's side of one HEAD, at our own seam)."""

    def __init__(self, *answers: _Response) -> None:
        self.answers = list(answers)
        self.calls = 0

    def request(self, *args: object, **kwargs: object) -> _Response:
        self.calls += 1
        return self.answers.pop(0)


def _client(session: _Session) -> object:
    import time

    from server.registry import _Client, parse_reference

    return _Client(parse_reference("127.0.0.1:5000/a/web:1"), "http://127.0.0.1:5000", 4.0, time.monotonic() + 4.0,
                   True, None, session)


def test_rate_limits_back_off_once_and_are_reported() -> None:
    from server.registry import RegistryView, _read_digest

    digest = "sha256:" + "a" * 64
    session = _Session(_Response(429, {"Retry-After": "0"}),
                       _Response(200, {"Docker-Content-Digest": digest, "RateLimit-Remaining": "3;w=21600",
                                       "RateLimit-Limit": "100;w=21600"}))
    answer = _read_digest(_client(session), RegistryView())  # type: ignore[arg-type]
    assert answer.digest == digest and session.calls == 2
    assert answer.rate_limit == "registry quota low: 3 of 100 requests left"
    # A wait longer than the deadline allows is not slept: the image's answer says when to retry.
    slow = _read_digest(_client(_Session(_Response(429, {"Retry-After": "3600"}))), RegistryView())  # type: ignore[arg-type]
    assert slow.state == "unreachable" and slow.digest is None and "retry after 3600" in (slow.rate_limit or "")
    spent = _read_digest(_client(_Session(_Response(200, {"Docker-Content-Digest": digest,  # type: ignore[arg-type]
                                                          "RateLimit-Remaining": "0"}))), RegistryView())
    assert spent.digest == digest and spent.rate_limit == "rate limited: quota used up (0 of ? requests left)"


class _Engine:
    """What check_refs asks of the engine, with a registry that rate-limits the first HEAD."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def info(self) -> dict[str, str]:
        return {"Architecture": "x86_64", "OSType": "linux"}

    def endpoint(self) -> object:
        from server.endpoint import Endpoint

        return Endpoint("nas", "tcp://nas:2376", "DOCKER_CONTEXT")

    async def image_attrs(self, ref: str) -> dict[str, object]:
        return {"RepoDigests": [ref.rsplit(":", 1)[0] + "@sha256:" + "1" * 64]}

    async def registry_digest(self, ref: str, view: object, timeout_s: float, *, direct: bool) -> object:
        from server.registry import TagDigest

        self.asked.append(ref)
        return TagDigest("unreachable", "registry rate limited (HTTP 429): retry after 600",
                         rate_limit="rate limited (HTTP 429): retry after 600")


@pytest.mark.anyio
async def test_a_rate_limiting_registry_is_not_asked_again_and_each_image_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from server.updates import check

    monkeypatch.setattr(check, "PARALLEL", 1)
    engine = _Engine()
    refs = {"ghcr.io/acme/api:latest": ["s/api"], "ghcr.io/acme/web:latest": ["s/web"], "quay.io/x/y:latest": ["s/y"]}
    found = {i.image: i for i in await check.check_refs(engine, refs)}  # type: ignore[arg-type]
    assert engine.asked == ["ghcr.io/acme/api:latest", "quay.io/x/y:latest"]
    assert all(i.status == "unknown" for i in found.values())
    assert "retry after 600" in (found["ghcr.io/acme/api:latest"].note or "")
    assert "rate-limited an earlier request" in (found["ghcr.io/acme/web:latest"].note or "")


def test_release_notes_come_from_the_oci_labels() -> None:
    from server.updates.apply import notes_link

    assert notes_link({"org.opencontainers.image.source": "https://github.com/acme/web.git"}) == (
        "https://github.com/acme/web/releases")
    assert notes_link({"org.opencontainers.image.source": "git@example.org:x/y",
                       "org.opencontainers.image.documentation": "https://docs.example.org/"}) == (
        "https://docs.example.org/")
    assert notes_link({"org.opencontainers.image.url": "javascript:alert(1)"}) is None and notes_link({}) is None


def test_the_plan_says_what_the_update_changes_and_its_plan_id_covers_the_edit(tmp_path: Path) -> None:
    from server.deploy.report import BackupPlan, DeployPlan, DeployReport, ServicePlan
    from server.updates.apply import Target, _annotate
    from server.updates.files import Edit

    plan = DeployPlan(plan_id="a" * 32, backup=BackupPlan(), services=[
        ServicePlan(service="web", action="unchanged", reason="config hash unchanged"),
        ServicePlan(service="db", action="unchanged", reason="config hash unchanged")])
    report = DeployReport(status="planned", stack="shop", plan=plan, needs_confirm="critical stack 'shop'")
    edit = Edit("web", tmp_path / ".env", "env", "WEB_TAG", "1.1.0")
    target = Target("web", "reg/web:1.0.0", "reg/web:1.1.0", "sha256:" + "1" * 64, "sha256:" + "2" * 64,
                    "newest minor-level tag of the same shape", edit, "https://github.com/acme/web/releases",
                    failed_before="incident inc-1 (rolled_back)", local_to=False)
    out = _annotate(report, [target], "minor")
    assert out.plan is not None
    web, db = out.plan.services
    assert (web.action, web.pull, web.release_notes) == ("recreate", True, "https://github.com/acme/web/releases")
    assert web.image_from == f"reg/web:1.0.0@sha256:{'1' * 64}" and web.image_to == f"reg/web:1.1.0@sha256:{'2' * 64}"
    assert web.reason.startswith("FAILED BEFORE (incident inc-1") and ".env WEB_TAG=1.1.0" in web.reason
    assert db == plan.services[1]
    assert out.plan.plan_id != plan.plan_id and len(out.plan.plan_id) == 32
    assert out.needs_confirm == "critical stack 'shop'; failed-before image(s) for web"
    assert [f.rule for f in out.findings] == ["failed-before"] and out.plan.plan_id in out.next_steps[0]
    other = _annotate(report, [Target("web", "reg/web:1.0.0", "reg/web:1.2.0", edit=Edit(
        "web", tmp_path / ".env", "env", "WEB_TAG", "1.2.0"))], "minor")
    assert other.plan is not None and other.plan.plan_id != out.plan.plan_id  # another edit, another plan_id
