"""OAuth / OpenID Connect sign-in through Authlib. A provider exists only when configured."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from portal.extensions import oauth


@dataclass(frozen=True)
class Provider:
    name: str  # route slug and identity key: github | google | oidc
    label: str
    oidc: bool


def configure(app) -> None:
    oauth.init_app(app)
    providers: dict[str, Provider] = {}
    cfg = app.config
    pkce = {"code_challenge_method": "S256"}
    if cfg.get("OAUTH_GITHUB_CLIENT_ID") and cfg.get("OAUTH_GITHUB_CLIENT_SECRET"):
        oauth.register(
            "github",
            client_id=cfg["OAUTH_GITHUB_CLIENT_ID"],
            client_secret=cfg["OAUTH_GITHUB_CLIENT_SECRET"],
            access_token_url="https://github.com/login/oauth/access_token",  # noqa: S106
            authorize_url="https://github.com/login/oauth/authorize",
            api_base_url="https://api.github.com/",
            client_kwargs={"scope": "read:user user:email", **pkce},
            overwrite=True,
        )
        providers["github"] = Provider("github", "GitHub", oidc=False)
    if cfg.get("OAUTH_GOOGLE_CLIENT_ID") and cfg.get("OAUTH_GOOGLE_CLIENT_SECRET"):
        oauth.register(
            "google",
            client_id=cfg["OAUTH_GOOGLE_CLIENT_ID"],
            client_secret=cfg["OAUTH_GOOGLE_CLIENT_SECRET"],
            server_metadata_url="https://accounts.google.com/.well-known/openid-configuration",
            client_kwargs={"scope": "openid email profile", **pkce},
            overwrite=True,
        )
        providers["google"] = Provider("google", "Google", oidc=True)
    if cfg.get("OAUTH_OIDC_CLIENT_ID") and cfg.get("OAUTH_OIDC_DISCOVERY_URL"):
        oauth.register(
            "oidc",
            client_id=cfg["OAUTH_OIDC_CLIENT_ID"],
            client_secret=cfg.get("OAUTH_OIDC_CLIENT_SECRET"),
            server_metadata_url=cfg["OAUTH_OIDC_DISCOVERY_URL"],
            client_kwargs={"scope": "openid email profile", **pkce},
            overwrite=True,
        )
        providers["oidc"] = Provider("oidc", cfg.get("OAUTH_OIDC_NAME") or "OpenID Connect", True)
    app.extensions["portal_oauth_providers"] = providers


def providers() -> dict[str, Provider]:
    return current_app.extensions.get("portal_oauth_providers", {})


def client(name: str):
    return oauth.create_client(name)


def fetch_identity(name: str) -> dict:
    """Finish the code exchange (state, nonce and PKCE are checked by Authlib) and
    return {subject, email, email_verified, username}."""
    c = client(name)
    if providers()[name].oidc:
        # Authlib checks only `iss` by default: insist on our audience too.
        claims_options = {
            "iss": {"essential": True, "value": c.load_server_metadata()["issuer"]},
            "aud": {"essential": True, "value": c.client_id},
        }
        token = c.authorize_access_token(claims_options=claims_options)
        info = token.get("userinfo") or c.userinfo(token=token)
        return {
            "subject": str(info.get("sub") or ""),
            "email": info.get("email"),
            "email_verified": bool(info.get("email_verified")),
            "username": info.get("preferred_username") or info.get("nickname"),
        }
    # GitHub: no OIDC; the verified primary email comes from /user/emails.
    token = c.authorize_access_token()
    profile = c.get("user", token=token).json()
    emails = c.get("user/emails", token=token).json()
    primary = next(
        (e for e in emails if isinstance(e, dict) and e.get("primary") and e.get("verified")), None
    )
    return {
        "subject": str(profile.get("id") or ""),
        "email": primary["email"] if primary else None,
        "email_verified": primary is not None,
        "username": profile.get("login"),
    }
