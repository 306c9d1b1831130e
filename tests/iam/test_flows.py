"""IAM flows through the public API, on both databases: sign-up, login, keys, invitations, roles."""

from __future__ import annotations

from typing import Any

from tests.iam_support import API, PASSWORD, IamHarness


async def test_signup_creates_user_organization_and_namespace_and_signs_in(iam_aiki: IamHarness) -> None:
    alice = await iam_aiki.signup("Alice@Example.com", organization="Acme", namespace="production")
    me = await alice.http.get(f"{API}/auth/me")
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["user"]["email"] == "alice@example.com"
    assert [(o["name"], o["role"]) for o in body["organizations"]] == [("Acme", "owner")]
    namespaces = await alice.http.get(f"{API}/organizations/{alice.org_id}/namespaces")
    assert [(n["name"], n["role"]) for n in namespaces.json()] == [("production", "admin")]


async def test_signup_refuses_a_taken_email_weak_password_and_bad_email(iam_aiki: IamHarness) -> None:
    await iam_aiki.signup("bob@example.com")
    http = iam_aiki.new_http()
    # A taken address answers like a free one (no enumeration); its owner is mailed a notice.
    taken = await http.post(f"{API}/auth/signup", json={"email": "BOB@example.com", "password": PASSWORD})
    assert taken.status_code == 202, taken.text
    assert "set-cookie" not in taken.headers
    assert iam_aiki.outbox.to("bob@example.com")[-1].subject == "Someone tried to sign up with your address"
    weak = await http.post(f"{API}/auth/signup", json={"email": "c@example.com", "password": "short"})
    assert weak.status_code == 422
    assert weak.json()["field"] == "$.password"
    bad = await http.post(f"{API}/auth/signup", json={"email": "not-an-email", "password": PASSWORD})
    assert bad.status_code == 422
    assert bad.json()["field"] == "$.email"
    for field, value in (("name", "n" * 201), ("organization", "o" * 101), ("namespace", " "), ("namespace", "a\x00b")):
        odd = await http.post(f"{API}/auth/signup", json={"email": "d@example.com", "password": PASSWORD, field: value})
        assert odd.status_code == 422, odd.text
        assert odd.json()["field"] == f"$.{field}"


async def test_long_passwords_are_not_truncated(iam_aiki: IamHarness) -> None:
    long_password = "p" * 200 + "A"
    await iam_aiki.signup("long@example.com", password=long_password)
    http = iam_aiki.new_http()
    wrong = await http.post(f"{API}/auth/login", json={"email": "long@example.com", "password": "p" * 200 + "B"})
    assert wrong.status_code == 401
    right = await http.post(f"{API}/auth/login", json={"email": "long@example.com", "password": long_password})
    assert right.status_code == 200, right.text


async def test_login_and_wrong_password(iam_aiki: IamHarness) -> None:
    await iam_aiki.signup("carol@example.com")
    http = iam_aiki.new_http()
    wrong = await http.post(f"{API}/auth/login", json={"email": "carol@example.com", "password": "nope-nope-nope"})
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "unauthorized"
    unknown = await http.post(f"{API}/auth/login", json={"email": "nobody@example.com", "password": PASSWORD})
    assert unknown.status_code == 401
    assert unknown.json()["detail"] == wrong.json()["detail"]  # no account enumeration
    ok = await http.post(f"{API}/auth/login", json={"email": "carol@example.com", "password": PASSWORD})
    assert ok.status_code == 200
    assert (await http.get(f"{API}/auth/me")).status_code == 200


async def test_api_key_is_shown_once_and_works_for_its_namespace(iam_aiki: IamHarness) -> None:
    alice = await iam_aiki.signup("alice@example.com")
    created = await iam_aiki.create_key(alice, "admin")
    key = created["key"]
    assert key.startswith("aiki_" + created["api_key"]["id"] + "_")
    listed = await alice.http.get(f"{API}/namespaces/{alice.namespace_id}/api-keys")
    assert listed.status_code == 200
    assert key not in listed.text
    assert listed.json()[0]["prefix"] == f"aiki_{created['api_key']['id']}_"
    assert listed.json()[0]["last_used_at"] is None

    runs = await iam_aiki.key_http(key).get(f"{API}/runs")
    assert runs.status_code == 200, runs.text
    assert runs.json()["items"] == []
    listed = await alice.http.get(f"{API}/namespaces/{alice.namespace_id}/api-keys")
    assert listed.json()[0]["last_used_at"] is not None


async def test_revocation_is_effective_on_the_next_request(iam_aiki: IamHarness) -> None:
    alice = await iam_aiki.signup("alice@example.com")
    created = await iam_aiki.create_key(alice, "worker")
    http = iam_aiki.key_http(created["key"])
    assert (await http.get(f"{API}/runs")).status_code == 200
    revoked = await alice.http.delete(f"{API}/namespaces/{alice.namespace_id}/api-keys/{created['api_key']['id']}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    after = await http.get(f"{API}/runs")
    assert after.status_code == 401
    assert "revoked" in after.json()["detail"]


async def test_keys_expire(iam_aiki: IamHarness) -> None:
    alice = await iam_aiki.signup("alice@example.com")
    expires_at = iam_aiki.iam.now() + 3_600_000
    created = await iam_aiki.create_key(alice, "read", expires_at=expires_at)
    http = iam_aiki.key_http(created["key"])
    assert (await http.get(f"{API}/runs")).status_code == 200
    iam_aiki.advance(3_600_001)
    after = await http.get(f"{API}/runs")
    assert after.status_code == 401
    assert "expired" in after.json()["detail"]


async def test_invitation_accept_cancel_and_wrong_email(iam_aiki: IamHarness) -> None:
    owner = await iam_aiki.signup("owner@example.com")
    viewer = await iam_aiki.invite_and_join(owner, "viewer@example.com", namespace_role="viewer")
    members = (await owner.http.get(f"{API}/organizations/{owner.org_id}/members")).json()
    assert {(m["email"], m["role"]) for m in members} == {
        ("owner@example.com", "owner"),
        ("viewer@example.com", "member"),
    }
    ns_members = (await owner.http.get(f"{API}/namespaces/{owner.namespace_id}/members")).json()
    assert [(m["email"], m["role"]) for m in ns_members] == [("viewer@example.com", "viewer")]
    seen = await viewer.http.get(f"{API}/runs", headers={"x-aiki-namespace": owner.namespace_id or ""})
    assert seen.status_code == 200, seen.text

    # A cancelled invitation cannot be used; one for another email neither.
    resp = await owner.http.post(f"{API}/organizations/{owner.org_id}/invitations", json={"email": "x@example.com"})
    invitation: dict[str, Any] = resp.json()
    assert invitation["url"].startswith("http://aiki/invitations/accept?token=")
    stranger = await iam_aiki.signup("stranger@example.com")
    wrong = await stranger.http.post(f"{API}/invitations/accept", json={"token": invitation["token"]})
    assert wrong.status_code == 403, wrong.text
    assert "another email address" in wrong.json()["detail"]
    cancel = await owner.http.delete(f"{API}/organizations/{owner.org_id}/invitations/{invitation['invitation']['id']}")
    assert cancel.status_code == 204, cancel.text
    x = await iam_aiki.signup("x@example.com")
    late = await x.http.post(f"{API}/invitations/accept", json={"token": invitation["token"]})
    assert late.status_code == 400
    pending = (await owner.http.get(f"{API}/organizations/{owner.org_id}/invitations")).json()
    assert pending == []


async def test_role_changes_and_the_last_owner(iam_aiki: IamHarness) -> None:
    owner = await iam_aiki.signup("owner@example.com")
    admin = await iam_aiki.invite_and_join(owner, "admin@example.com", role="admin")
    member = await iam_aiki.invite_and_join(owner, "member@example.com")
    members_url = f"{API}/organizations/{owner.org_id}/members"
    # An admin may promote a member to admin, not to owner.
    ok = await admin.http.patch(f"{members_url}/{member.user_id}", json={"role": "admin"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["role"] == "admin"
    to_owner = await admin.http.patch(f"{members_url}/{member.user_id}", json={"role": "owner"})
    assert to_owner.status_code == 403
    last = await owner.http.patch(f"{members_url}/{owner.user_id}", json={"role": "member"})
    assert last.status_code == 422
    bad = await owner.http.patch(f"{members_url}/{member.user_id}", json={"role": "emperor"})
    assert bad.status_code == 422
    assert bad.json()["field"] == "$.role"
    removed = await owner.http.delete(f"{members_url}/{member.user_id}")
    assert removed.status_code == 204
    gone = await member.http.get(f"{API}/organizations/{owner.org_id}")
    assert gone.status_code == 404


async def test_namespaces_create_and_delete(iam_aiki: IamHarness) -> None:
    owner = await iam_aiki.signup("owner@example.com")
    created = await owner.http.post(f"{API}/organizations/{owner.org_id}/namespaces", json={"name": "staging"})
    assert created.status_code == 201, created.text
    ns = created.json()["id"]
    dup = await owner.http.post(f"{API}/organizations/{owner.org_id}/namespaces", json={"name": "staging"})
    assert dup.status_code == 409
    key = (await iam_aiki.create_key(owner, "admin", namespace_id=ns))["key"]
    assert (await iam_aiki.key_http(key).get(f"{API}/runs")).status_code == 200
    deleted = await owner.http.delete(f"{API}/namespaces/{ns}")
    assert deleted.status_code == 204, deleted.text
    assert (await iam_aiki.key_http(key).get(f"{API}/runs")).status_code == 401


async def test_sessions_must_name_their_namespace(iam_aiki: IamHarness) -> None:
    owner = await iam_aiki.signup("owner@example.com")
    resp = await owner.http.get(f"{API}/runs")
    assert resp.status_code == 422
    assert resp.json()["field"] == "X-Aiki-Namespace"


async def test_dev_mode_first_signup_owns_the_default_namespace(db_url: str) -> None:
    from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID, DEFAULT_ORGANIZATION_ID

    kind = "postgres" if db_url.startswith("postgresql") else "sqlite"
    harness = await IamHarness(kind, db_url, claim_default_organization=True).start()
    try:
        first = await harness.signup("first@example.com")
        assert (first.org_id, first.namespace_id) == (DEFAULT_ORGANIZATION_ID, DEFAULT_NAMESPACE_ID)
        second = await harness.signup("second@example.com")
        assert second.org_id != DEFAULT_ORGANIZATION_ID
        denied = await second.http.get(f"{API}/runs", headers={"x-aiki-namespace": DEFAULT_NAMESPACE_ID})
        assert denied.status_code == 404
    finally:
        await harness.close()


async def test_a_key_naming_another_namespace_is_404(iam_aiki: IamHarness) -> None:
    alice = await iam_aiki.signup("alice@example.com")
    bob = await iam_aiki.signup("bob@example.com")
    key = (await iam_aiki.create_key(alice, "admin"))["key"]
    resp = await iam_aiki.key_http(key).get(f"{API}/runs", headers={"x-aiki-namespace": bob.namespace_id or ""})
    assert resp.status_code == 404
