"""OAuth sign-ins are audited too (real local OIDC provider)."""

from __future__ import annotations

import pytest

from tests.test_accounts_oauth import CALLBACK, oauth_dance


@pytest.fixture
def app_config(app_config, oidc_provider):
    oidc_provider.register_redirect_uri(CALLBACK)
    app_config.update(
        OAUTH_OIDC_CLIENT_ID=oidc_provider.client_id,
        OAUTH_OIDC_CLIENT_SECRET=oidc_provider.client_secret,
        OAUTH_OIDC_DISCOVERY_URL=oidc_provider.discovery_url,
        OAUTH_OIDC_NAME="TestID",
    )
    return app_config


def test_oauth_sign_in_ok_and_refused_are_audited(app, client, oidc_provider, admin, auth):
    oidc_provider.set_user("sub-x", "nobody@example.test", email_verified=True)
    oauth_dance(client)  # signup is closed: refused
    app.config["PORTAL_SIGNUP_OPEN"] = True
    oidc_provider.set_user("sub-y", "newbie@example.test", email_verified=True)
    final = oauth_dance(client)
    assert final.status_code == 302 and final.location.endswith("/dashboard")
    app.extensions["portal_audit"].flush()
    rows = client.get(
        "/api/audit", headers=auth(admin), query_string={"action": "sign_in"}
    ).get_json()["events"]
    assert [r["result"] for r in rows] == ["ok", "failed"]
    assert rows[0]["details"] == {"method": "oauth:oidc"}
    assert rows[1]["target_name"] == "nobody@example.test"
    assert rows[1]["details"]["reason"].startswith("oidc: ")
    created = client.get(
        "/api/audit", headers=auth(admin), query_string={"action": "user_created"}
    ).get_json()["events"]
    assert created[0]["details"] == {"how": "oauth:oidc"}
