"""Proves that tests/fixtures/oidc_provider.py is a spec-correct OpenID Connect provider.

Part 1 drives it with Authlib's own generic client (requests_client.OAuth2Session).
Part 2 is the reference pattern for the portal's OAuth login test: a tiny Flask app
using ``authlib.integrations.flask_client.OAuth`` exactly like the portal, driven with
the Flask test client, with the provider's 302 followed manually via ``requests``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.flask_client import OAuth, OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core import CodeIDToken
from flask import Flask, session, url_for
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from tests.fixtures.oidc_provider import OIDCProvider

CALLBACK = "http://localhost/auth/oidc/callback"
TIMEOUT = 10


def _get(url: str, **kwargs) -> requests.Response:
    """What the browser does on the provider: one GET, redirects NOT followed."""
    with requests.Session() as http:
        return http.get(url, allow_redirects=False, timeout=TIMEOUT, **kwargs)


def _post(url: str, **kwargs) -> requests.Response:
    with requests.Session() as http:
        return http.post(url, timeout=TIMEOUT, **kwargs)


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@pytest.fixture
def provider(oidc_provider: OIDCProvider) -> OIDCProvider:
    oidc_provider.register_redirect_uri(CALLBACK)
    return oidc_provider


def _session(provider: OIDCProvider, **kwargs) -> OAuth2Session:
    kwargs.setdefault("redirect_uri", CALLBACK)
    return OAuth2Session(
        provider.client_id,
        provider.client_secret,
        scope="openid email profile",
        code_challenge_method="S256",
        **kwargs,
    )


def _authorize(provider: OIDCProvider, client: OAuth2Session, **params) -> tuple[str, str]:
    """Run /authorize with PKCE S256 + nonce; return (callback URL, code_verifier)."""
    verifier = params.pop("code_verifier", None) or generate_token(48)
    params.setdefault("nonce", generate_token(20))
    url, _state = client.create_authorization_url(
        provider.authorization_endpoint, code_verifier=verifier, **params
    )
    resp = _get(url)
    assert resp.status_code == 302, resp.text
    return resp.headers["Location"], verifier


def _code_flow(provider: OIDCProvider, client: OAuth2Session, nonce: str) -> dict:
    callback, verifier = _authorize(provider, client, nonce=nonce)
    return client.fetch_token(
        provider.token_endpoint, authorization_response=callback, code_verifier=verifier
    )


def _raw_token_request(provider, code, verifier, redirect_uri=CALLBACK, secret=None):
    return _post(
        provider.token_endpoint,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        auth=(provider.client_id, secret or provider.client_secret),
    )


# ============================================================== discovery & keys


def test_discovery_document(provider: OIDCProvider) -> None:
    resp = _get(provider.discovery_url)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    doc = resp.json()
    issuer = provider.issuer
    assert issuer.startswith("http://127.0.0.1:") and not issuer.endswith("/")
    assert doc["issuer"] == issuer
    assert doc["authorization_endpoint"] == f"{issuer}/authorize"
    assert doc["token_endpoint"] == f"{issuer}/token"
    assert doc["userinfo_endpoint"] == f"{issuer}/userinfo"
    assert doc["jwks_uri"] == f"{issuer}/jwks"
    assert doc["response_types_supported"] == ["code"]
    assert doc["subject_types_supported"] == ["public"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]
    assert doc["scopes_supported"] == ["openid", "email", "profile"]
    assert provider.counts["discovery"] == 1


def test_jwks_publishes_only_the_public_key(provider: OIDCProvider) -> None:
    keys = _get(provider.jwks_uri).json()["keys"]
    assert len(keys) == 1
    (key,) = keys
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig"
    assert key["kid"] == provider.kid
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


# ============================================================== happy path


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_full_code_flow(provider: OIDCProvider, auth_method: str) -> None:
    provider.set_user("u-42", "bob@example.test", name="Bob B", preferred_username="bob")
    nonce = generate_token(20)
    with _session(provider, token_endpoint_auth_method=auth_method) as client:
        callback, verifier = _authorize(provider, client, nonce=nonce)
        assert callback.startswith(CALLBACK + "?")
        params = _query(callback)
        assert set(params) == {"code", "state"}
        sent = provider.last_authorize_params
        assert params["state"] == sent["state"]
        assert sent["code_challenge_method"] == "S256"
        assert sent["code_challenge"] == _s256(verifier)
        assert sent["nonce"] == nonce

        token = client.fetch_token(
            provider.token_endpoint, authorization_response=callback, code_verifier=verifier
        )
        assert provider.last_token_auth_method == auth_method
        assert token["token_type"] == "Bearer"
        assert token["expires_in"] == 3600
        assert token["access_token"] and token["id_token"]
        assert "refresh_token" not in token

        # id_token: RS256 signature validates against /jwks, header carries the kid
        jwks = KeySet.import_key_set(_get(provider.jwks_uri).json())
        decoded = jwt.decode(token["id_token"], jwks, algorithms=["RS256"])
        assert decoded.header["alg"] == "RS256"
        assert decoded.header["kid"] == provider.kid
        claims = decoded.claims
        assert claims["iss"] == provider.issuer
        assert claims["aud"] == provider.client_id
        assert claims["sub"] == "u-42"
        assert claims["nonce"] == nonce
        assert claims["exp"] > claims["iat"]
        assert claims["email"] == "bob@example.test"
        assert claims["email_verified"] is True
        assert claims["name"] == "Bob B"
        assert claims["preferred_username"] == "bob"
        # ... and passes Authlib's OIDC validation (iss, aud, exp, nonce, at_hash)
        CodeIDToken(
            claims,
            decoded.header,
            {"iss": {"values": [provider.issuer]}},
            {
                "nonce": nonce,
                "client_id": provider.client_id,
                "access_token": token["access_token"],
            },
        ).validate(leeway=60)
        assert provider.last_id_token == token["id_token"]

        userinfo = client.get(provider.userinfo_endpoint, timeout=TIMEOUT)
        assert userinfo.status_code == 200
        assert userinfo.json() == {
            "sub": "u-42",
            "email": "bob@example.test",
            "email_verified": True,
            "name": "Bob B",
            "preferred_username": "bob",
        }
    assert provider.counts == {"authorize": 1, "token": 1, "userinfo": 1, "jwks": 1}


def test_scope_filters_claims(provider: OIDCProvider) -> None:
    with _session(provider) as client:
        client.scope = "openid email"
        token = _code_flow(provider, client, nonce="n-scope")
        claims = jwt.decode(token["id_token"], KeySet.import_key_set(provider.public_jwks)).claims
        assert claims["email"] == "alice@example.test"
        assert "name" not in claims and "preferred_username" not in claims
        info = client.get(provider.userinfo_endpoint, timeout=TIMEOUT).json()
        assert set(info) == {"sub", "email", "email_verified"}


def test_unverified_email_is_reported(provider: OIDCProvider) -> None:
    provider.set_user("u-7", "eve@example.test", email_verified=False)
    with _session(provider) as client:
        info = _code_flow(provider, client, nonce="n-unverified")
        claims = jwt.decode(info["id_token"], KeySet.import_key_set(provider.public_jwks)).claims
    assert claims["email_verified"] is False
    assert claims["preferred_username"] == "eve" and claims["name"] == "eve"


# ============================================================== token endpoint errors


def test_bad_code_verifier_is_rejected(provider: OIDCProvider) -> None:
    with _session(provider) as client:
        callback, _verifier = _authorize(provider, client)
        with pytest.raises(OAuthError) as exc:
            client.fetch_token(
                provider.token_endpoint,
                authorization_response=callback,
                code_verifier=generate_token(48),
            )
    assert exc.value.error == "invalid_grant"
    assert provider.token_responses[-1][0] == 400


def test_missing_code_verifier_is_rejected(provider: OIDCProvider) -> None:
    with _session(provider) as client:
        callback, _verifier = _authorize(provider, client)
    resp = _post(
        provider.token_endpoint,
        data={
            "grant_type": "authorization_code",
            "code": _query(callback)["code"],
            "redirect_uri": CALLBACK,
        },
        auth=(provider.client_id, provider.client_secret),
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_request"


def test_reused_code_is_rejected_and_revokes_tokens(provider: OIDCProvider) -> None:
    with _session(provider) as client:
        callback, verifier = _authorize(provider, client)
        token = client.fetch_token(
            provider.token_endpoint, authorization_response=callback, code_verifier=verifier
        )
        assert client.get(provider.userinfo_endpoint, timeout=TIMEOUT).status_code == 200
        with pytest.raises(OAuthError) as exc:
            client.fetch_token(
                provider.token_endpoint, authorization_response=callback, code_verifier=verifier
            )
    assert exc.value.error == "invalid_grant"
    assert provider.code_reuse_count == 1
    resp = _get(
        provider.userinfo_endpoint,
        headers={"Authorization": f"Bearer {token['access_token']}"},
    )
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_token"


def test_wrong_redirect_uri_at_token_endpoint_is_rejected(provider: OIDCProvider) -> None:
    other = "http://localhost/other/callback"
    provider.register_redirect_uri(other)  # registered, but not the one used for /authorize
    with _session(provider) as client:
        callback, verifier = _authorize(provider, client)
        with pytest.raises(OAuthError) as exc:
            client.fetch_token(
                provider.token_endpoint,
                authorization_response=callback,
                code_verifier=verifier,
                redirect_uri=other,
            )
    assert exc.value.error == "invalid_grant"


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_wrong_client_secret_is_rejected(provider: OIDCProvider, auth_method: str) -> None:
    with _session(provider, token_endpoint_auth_method=auth_method) as client:
        callback, verifier = _authorize(provider, client)
    with OAuth2Session(
        provider.client_id,
        "not-the-secret",
        redirect_uri=CALLBACK,
        token_endpoint_auth_method=auth_method,
    ) as wrong:
        with pytest.raises(OAuthError) as exc:
            wrong.fetch_token(
                provider.token_endpoint, authorization_response=callback, code_verifier=verifier
            )
    assert exc.value.error == "invalid_client"
    assert provider.token_responses[-1][0] == 401
    # the code was not burnt by the failed attempt: the real client can still redeem it
    resp = _raw_token_request(provider, _query(callback)["code"], verifier)
    assert resp.status_code == 200, resp.text


def test_unknown_code_and_grant_type(provider: OIDCProvider) -> None:
    resp = _raw_token_request(provider, "no-such-code", generate_token(48))
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    resp = _post(
        provider.token_endpoint,
        data={"grant_type": "client_credentials"},
        auth=(provider.client_id, provider.client_secret),
    )
    assert resp.status_code == 400 and resp.json()["error"] == "unsupported_grant_type"


# ============================================================== authorize endpoint errors


def _authorize_params(provider: OIDCProvider, **overrides) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": CALLBACK,
        "scope": "openid email profile",
        "state": "st-123",
        "nonce": generate_token(20),
        "code_challenge": _s256(generate_token(48)),
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"scope": "email profile"}, "invalid_scope"),
        ({"scope": "openid admin"}, "invalid_scope"),
        ({"nonce": None}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ],
)
def test_invalid_authorize_requests_redirect_back_with_error(
    provider: OIDCProvider, overrides: dict, error: str
) -> None:
    resp = _get(provider.authorization_endpoint, params=_authorize_params(provider, **overrides))
    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert location.startswith(CALLBACK + "?")
    params = _query(location)
    assert params["error"] == error
    assert params["state"] == "st-123"
    assert "code" not in params
    assert provider.issued_codes == []


def test_missing_state_is_rejected(provider: OIDCProvider) -> None:
    resp = _get(provider.authorization_endpoint, params=_authorize_params(provider, state=None))
    assert resp.status_code == 302
    assert _query(resp.headers["Location"])["error"] == "invalid_request"


def test_replayed_nonce_is_rejected(provider: OIDCProvider) -> None:
    params = _authorize_params(provider, nonce="same-nonce")
    assert "code" in _query(
        _get(provider.authorization_endpoint, params=params).headers["Location"]
    )
    again = _query(_get(provider.authorization_endpoint, params=params).headers["Location"])
    assert again["error"] == "invalid_request"


@pytest.mark.parametrize(
    "overrides",
    [
        {"redirect_uri": "http://localhost/evil"},
        {"redirect_uri": CALLBACK + "/"},  # exact match only
        {"redirect_uri": CALLBACK + "?x=1"},
        {"redirect_uri": None},
        {"client_id": "unknown-client"},
        {"client_id": None},
    ],
)
def test_bad_client_or_redirect_uri_is_never_redirected_to(
    provider: OIDCProvider, overrides: dict
) -> None:
    resp = _get(provider.authorization_endpoint, params=_authorize_params(provider, **overrides))
    assert resp.status_code in (400, 401)
    assert "Location" not in resp.headers
    assert resp.json()["error"] in ("invalid_request", "invalid_client")


def test_deny_next_returns_access_denied_once(provider: OIDCProvider) -> None:
    provider.deny_next()
    resp = _get(provider.authorization_endpoint, params=_authorize_params(provider))
    assert resp.status_code == 302
    assert _query(resp.headers["Location"]) == {"error": "access_denied", "state": "st-123"}
    resp = _get(provider.authorization_endpoint, params=_authorize_params(provider))
    assert set(_query(resp.headers["Location"])) == {"code", "state"}


def test_userinfo_requires_a_valid_bearer_token(provider: OIDCProvider) -> None:
    resp = _get(provider.userinfo_endpoint)
    assert resp.status_code == 401
    resp = _get(provider.userinfo_endpoint, headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_token"


def test_start_stop_and_reset() -> None:
    with OIDCProvider(client_id="standalone", client_secret="s3cret") as provider:
        issuer = provider.issuer
        assert _get(provider.discovery_url).json()["issuer"] == issuer
        provider.register_redirect_uri(CALLBACK)
        provider.deny_next()
        provider.reset()
        assert provider.redirect_uris == set() and provider.counts == {}
        assert provider.client_secret == "s3cret" and provider.issuer == issuer
    with pytest.raises(requests.ConnectionError):
        _get(issuer + "/.well-known/openid-configuration")


# ============================================================== portal-like Flask client


def make_portal_like_app(provider: OIDCProvider, check_aud: bool = True) -> Flask:
    """What the portal does, minus everything else.

    ``check_aud``: Authlib's default id_token validation only pins ``iss``; ``aud`` is
    only checked indirectly (a foreign ``aud`` is accepted if ``azp`` == client_id),
    so the portal should pass ``claims_options`` pinning both (this replaces the
    default ``iss`` option, hence ``iss`` must be repeated).
    """
    app = Flask("portal_like")
    app.config.update(SECRET_KEY="test-secret-key", TESTING=True)
    oauth = OAuth(app)
    oauth.register(
        name="oidc",
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        server_metadata_url=provider.discovery_url,
        client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256"},
    )

    @app.get("/login/oidc")
    def login():
        return oauth.oidc.authorize_redirect(url_for("callback", _external=True))

    @app.get("/auth/oidc/callback")
    def callback():
        kwargs = {}
        if check_aud:
            kwargs["claims_options"] = {
                "iss": {"essential": True, "value": oauth.oidc.load_server_metadata()["issuer"]},
                "aud": {"essential": True, "value": oauth.oidc.client_id},
            }
        try:
            token = oauth.oidc.authorize_access_token(**kwargs)
        except OAuthError as exc:  # error=... from the provider, or token endpoint error
            return {"error": exc.error, "description": exc.description}, 400
        except JoseError as exc:  # bad id_token signature / iss / aud / exp / nonce
            return {"error": "invalid_id_token", "description": repr(exc)}, 400
        userinfo = token["userinfo"]  # validated id_token claims
        session["sub"] = userinfo["sub"]
        return {
            "id_token_claims": dict(userinfo),
            "userinfo_endpoint": dict(oauth.oidc.userinfo(token=token)),
        }

    return app


def _browser_login(app: Flask, provider: OIDCProvider):
    """Flask test client <-> real HTTP provider, following the provider's 302 by hand."""
    client = app.test_client()
    start = client.get("/login/oidc")
    assert start.status_code == 302
    authorize_url = start.headers["Location"]
    assert authorize_url.startswith(provider.authorization_endpoint + "?")
    at_provider = _get(authorize_url)  # the "browser" visits the provider
    assert at_provider.status_code == 302, at_provider.text
    callback_url = at_provider.headers["Location"]
    assert callback_url.startswith(CALLBACK + "?")
    # Flask's test client accepts the absolute http://localhost/... URL as-is and
    # sends the session cookie set by /login/oidc (Authlib keeps state/nonce/verifier there).
    return client, client.get(callback_url)


def test_flask_client_login_pattern(provider: OIDCProvider, monkeypatch) -> None:
    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT", raising=False)  # not needed on loopback
    provider.set_user(
        "portal-user-9", "carol@example.test", name="Carol", preferred_username="carol"
    )
    app = make_portal_like_app(provider)
    client, resp = _browser_login(app, provider)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    claims = body["id_token_claims"]
    assert claims["iss"] == provider.issuer
    assert claims["aud"] == provider.client_id
    assert claims["sub"] == "portal-user-9"
    assert claims["email"] == "carol@example.test" and claims["email_verified"] is True
    assert claims["name"] == "Carol" and claims["preferred_username"] == "carol"
    assert claims["nonce"] == provider.last_authorize_params["nonce"]
    assert body["userinfo_endpoint"]["sub"] == "portal-user-9"

    sent = provider.last_authorize_params
    assert sent["redirect_uri"] == CALLBACK
    assert sent["scope"] == "openid email profile"
    assert sent["code_challenge_method"] == "S256" and sent["code_challenge"]
    assert provider.last_token_auth_method == "client_secret_basic"
    assert provider.last_token_params["code_verifier"]
    assert provider.counts == {"discovery": 1, "authorize": 1, "token": 1, "jwks": 1, "userinfo": 1}
    with client.session_transaction() as sess:
        assert sess["sub"] == "portal-user-9"
    assert "AUTHLIB_INSECURE_TRANSPORT" not in os.environ


def test_flask_client_provider_denies(provider: OIDCProvider) -> None:
    provider.deny_next()
    _client, resp = _browser_login(make_portal_like_app(provider), provider)
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "access_denied"
    assert provider.counts["token"] == 0


@pytest.mark.parametrize(
    "tamper",
    [
        {"nonce": "not-the-nonce"},
        {"aud": "some-other-client"},
        {"aud": "some-other-client", "azp": "webterm-portal-test"},
        {"iss": "http://127.0.0.1:1"},
        {"exp": 1_000_000},
    ],
)
def test_flask_client_rejects_tampered_id_token(provider: OIDCProvider, tamper: dict) -> None:
    provider.override_next_id_token(**tamper)
    _client, resp = _browser_login(make_portal_like_app(provider), provider)
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "invalid_id_token"


def test_flask_client_default_validation_does_not_pin_aud(provider: OIDCProvider) -> None:
    """Documents the Authlib 1.9.6 pitfall that ``check_aud`` (claims_options) closes."""
    provider.override_next_id_token(aud="some-other-client", azp=provider.client_id)
    _client, resp = _browser_login(make_portal_like_app(provider, check_aud=False), provider)
    assert resp.status_code == 200
    assert resp.get_json()["id_token_claims"]["aud"] == "some-other-client"


def test_flask_client_rejects_bad_id_token_signature(provider: OIDCProvider) -> None:
    provider.corrupt_next_id_token_signature()
    _client, resp = _browser_login(make_portal_like_app(provider), provider)
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "invalid_id_token"


def test_flask_client_callback_with_forged_state_is_rejected(provider: OIDCProvider) -> None:
    app = make_portal_like_app(provider)
    client = app.test_client()
    authorize_url = client.get("/login/oidc").headers["Location"]
    callback_url = _get(authorize_url).headers["Location"]
    code = _query(callback_url)["code"]
    resp = client.get(f"/auth/oidc/callback?code={code}&state=forged")
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "mismatching_state"
    assert provider.counts["token"] == 0
