"""Dashboard pages over HTTP (no browser): sign-up and login forms, redirects, errors, headers,
runs list and run page contents. The browser tests drive the same pages in Chromium."""

from __future__ import annotations

import re

from aiki import Run, client, task, worker, workflow
from tests.dashboard.support import ORIGIN, UI, signup
from tests.iam_support import IamHarness
from tests.integration.helpers import WAIT

PAGE_WF = workflow(name="dash-pages-wf")


@task(name="dash-pages-double")
async def double(n: int) -> int:
    return n * 2


@PAGE_WF.v("1.0.0")
async def page_v1(run: Run, n: int) -> int:
    return await double.start(run, n)


def _assert_secure_headers(headers: object) -> None:
    h = dict(headers)  # type: ignore[call-overload]
    csp = h["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert h["x-content-type-options"] == "nosniff"
    assert h["referrer-policy"] == "same-origin"


def _no_inline_script(html: str) -> None:
    for tag in re.findall(r"<script[^>]*>", html):
        assert "src=" in tag, tag
    assert " on" + "click=" not in html.lower()


async def test_sign_up_lands_on_an_empty_runs_page_that_says_what_to_do(iam_aiki: IamHarness) -> None:
    person = await signup(iam_aiki, "owner@pages.example", organization="Pages")
    page = await person.http.get(f"{UI}/ns/{person.namespace_id}/runs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "No runs yet" in page.text
    assert "aiki worker your_module:your_workflow --url http://aiki --api-key" in page.text
    assert "owner@pages.example" in page.text  # the user menu
    assert "Log out" in page.text
    _assert_secure_headers(page.headers)
    _no_inline_script(page.text)


async def test_signed_out_pages_redirect_to_login_and_back(iam_aiki: IamHarness) -> None:
    person = await signup(iam_aiki, "back@pages.example")
    anonymous = iam_aiki.new_http()
    target = f"{UI}/ns/{person.namespace_id}/runs?status=running"
    resp = await anonymous.get(target)
    assert resp.status_code == 303
    assert resp.headers["location"].startswith(f"{UI}/login?next=")
    form = await anonymous.get(resp.headers["location"])
    assert form.status_code == 200
    assert 'name="next"' in form.text
    logged = await anonymous.post(
        f"{UI}/login",
        data={"email": "back@pages.example", "password": "correct horse battery staple", "next": target},
        headers=ORIGIN,
    )
    assert logged.status_code == 303
    assert logged.headers["location"] == target
    assert (await anonymous.get(target)).status_code == 200


async def test_login_failures_read_as_messages_not_traces(iam_aiki: IamHarness) -> None:
    await signup(iam_aiki, "wrong@pages.example")
    anonymous = iam_aiki.new_http()
    resp = await anonymous.post(
        f"{UI}/login", data={"email": "wrong@pages.example", "password": "not the password"}, headers=ORIGIN
    )
    assert resp.status_code == 401
    assert 'role="alert"' in resp.text
    assert "Traceback" not in resp.text
    # An open redirect through `next` is not followed.
    resp = await anonymous.post(
        f"{UI}/login",
        data={
            "email": "wrong@pages.example",
            "password": "correct horse battery staple",
            "next": "//evil.example/",
        },
        headers=ORIGIN,
    )
    assert resp.status_code == 303
    assert resp.headers["location"] == f"{UI}/home"


async def test_unknown_pages_and_ids_render_a_readable_error(iam_aiki: IamHarness) -> None:
    person = await signup(iam_aiki, "err@pages.example")
    resp = await person.http.get(f"{UI}/ns/{person.namespace_id}/runs/0190aaaa-0000-7000-8000-000000000000")
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("text/html")
    assert "Not found" in resp.text
    _assert_secure_headers(resp.headers)
    resp = await person.http.get(f"{UI}/ns/{person.namespace_id}/runs?status=bogus")
    assert resp.status_code == 422
    assert "unknown status" in resp.text
    resp = await person.http.get(f"{UI}/ns/{person.namespace_id}/runs?cursor=nonsense")
    assert resp.status_code == 422
    assert "cursor" in resp.text


async def test_runs_list_filters_pages_and_opens_a_run(iam_aiki: IamHarness) -> None:
    person = await signup(iam_aiki, "runs@pages.example")
    made = await person.post(f"{UI}/ns/{person.namespace_id}/keys", data={"name": "w", "role": "worker"})
    assert made.status_code == 200, made.text
    secret = re.search(r'id="new-key-value">(aiki_[^<]+)<', made.text)
    assert secret, made.text
    aiki_client = client(handler=iam_aiki.handler, api_key=secret.group(1))
    handle = await worker(workflows=[page_v1], concurrency=5).spawn(aiki_client)
    try:
        api = iam_aiki.key_http(secret.group(1))
        runs = []
        for n in range(3):
            started = await api.post(
                "/api/v1/runs",
                json={"workflow": "dash-pages-wf", "version": "1.0.0", "input": n, "reference_id": f"ref-{n}"},
            )
            assert started.status_code == 201, started.text
            runs.append(started.json()["run"]["id"])
        for run_id in runs:
            view = await aiki_client.get_run(
                run_id, wait_for=["completed"], timeout_ms=int(WAIT.total_seconds() * 1000)
            )
            assert view.status == "completed"
        base = f"{UI}/ns/{person.namespace_id}/runs"
        listing = await person.http.get(base)
        for r in runs:
            assert r in listing.text or r[:8] in listing.text
        filtered = await person.http.get(base, params={"reference_id": "ref-1"})
        assert 'data-run-id="' + runs[1] + '"' in filtered.text
        assert 'data-run-id="' + runs[0] + '"' not in filtered.text
        # HTMX asks for the table only.
        partial = await person.http.get(base, headers={"hx-request": "true"})
        assert partial.text.lstrip().startswith('<div id="runs"')
        assert "<html" not in partial.text
        # Nothing is live: the table does not poll.
        assert "hx-trigger" not in partial.text
        none = await person.http.get(base, params={"workflow": "no-such-wf"})
        assert "No runs match these filters" in none.text
        detail = await person.http.get(f"{base}/{runs[2]}")
        assert detail.status_code == 200
        text = detail.text
        assert 'data-status="completed"' in text
        assert "Attempt 1" in text
        assert "dash-pages-double" in text
        assert "<code>4</code>" in text  # the output, 2 * 2
        assert 'data-action="cancel"' not in text  # a completed run offers no action
    finally:
        await handle.stop()
        await aiki_client.close()


async def test_the_sso_link_shows_only_when_oidc_is_on(iam_aiki: IamHarness) -> None:
    anonymous = iam_aiki.new_http()
    assert "Log in with SSO" not in (await anonymous.get(f"{UI}/login")).text
    iam_aiki.handler.state.oidc_enabled = True
    try:
        page = await anonymous.get(f"{UI}/login")
        assert 'href="/api/v1/auth/oidc/login?return_to=/ui/"' in page.text
        assert "Log in with SSO" in page.text
        # A page that sent the person to log in is where SSO brings them back too.
        asked = await anonymous.get(f"{UI}/login", params={"next": f"{UI}/namespaces"})
        assert 'href="/api/v1/auth/oidc/login?return_to=/ui/namespaces"' in asked.text
    finally:
        iam_aiki.handler.state.oidc_enabled = False


async def test_static_files_ship_and_pages_name_only_them(iam_aiki: IamHarness) -> None:
    anonymous = iam_aiki.new_http()
    page = await anonymous.get(f"{UI}/login")
    scripts = re.findall(r'<script src="([^"]+)"', page.text)
    assert scripts == [f"{UI}/static/htmx-2.0.4.min.js", f"{UI}/static/copy.js"]
    for path in [*scripts, f"{UI}/static/style.css"]:
        resp = await anonymous.get(path)
        assert resp.status_code == 200, path
        assert len(resp.content) > 500 or path.endswith("copy.js")
    front = await anonymous.get("/")
    assert front.status_code == 303
    assert front.headers["location"] == f"{UI}/"
    assert (await anonymous.get(f"{UI}/")).headers["location"] == f"{UI}/login"


CHILD_WF = workflow(name="dash-child-wf")
PARENT_WF = workflow(name="dash-parent-wf")


@CHILD_WF.v("1")
async def child_v1(run: Run, n: int) -> int:
    return n * 10


@PARENT_WF.v("1")
async def parent_v1(run: Run, n: int) -> int:
    child = await child_v1.start_as_child(run, n)
    done = await child.wait_for_status("completed")
    return int(done.output)


async def test_a_run_page_links_its_children_and_its_parent(iam_aiki: IamHarness) -> None:
    person = await signup(iam_aiki, "tree@pages.example")
    made = await person.post(f"{UI}/ns/{person.namespace_id}/keys", data={"name": "w", "role": "worker"})
    secret = re.search(r'id="new-key-value">(aiki_[^<]+)<', made.text)
    assert secret
    aiki_client = client(handler=iam_aiki.handler, api_key=secret.group(1))
    handle = await worker(workflows=[parent_v1, child_v1], concurrency=5).spawn(aiki_client)
    try:
        parent = await parent_v1.start(aiki_client, 4)
        await parent.wait_for_status("completed", timeout=WAIT)
        base = f"{UI}/ns/{person.namespace_id}/runs"
        page = (await person.http.get(f"{base}/{parent.id}")).text
        child_link = re.search(rf'<a href="({base}/[^"]+)"><code>', page.split('id="children"', 1)[1])
        assert child_link, page
        child_page = (await person.http.get(child_link.group(1))).text
        assert "dash-child-wf" in child_page
        assert f'<a href="{base}/{parent.id}" id="parent-link">' in child_page
        assert "<code>40</code>" in child_page
    finally:
        await handle.stop()
        await aiki_client.close()
