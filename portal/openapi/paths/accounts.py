"""Sign-up, sign-in, profile, users, the second factor and passkeys."""

from __future__ import annotations

from portal.openapi.paths.common import PASSKEY, RATE, TOKENS, WEBAUTHN_OPTIONS, A, U
from portal.openapi.spec import OBJ, PAGE, B, I, S, arr, obj, op, q

# Proof it is still the user before a factor goes: the password, or a `reauth` passkey assertion.
REAUTH = obj({"password": S, "passkey": OBJ})

PATHS: dict[str, dict[str, dict]] = {
    # ---------------------------------------------------------------- authentication
    "/api/signup": {
        "POST": op(
            "Create an account",
            A,
            ok=201,
            out=TOKENS,
            public=True,
            body=obj(
                {"email": S, "username": S, "password": S, "invite": S},
                required=("email", "username", "password"),
            ),
            errors=(403, 409, 422) + RATE,
        )
    },
    "/api/login": {
        "POST": op(
            "Sign in",
            A,
            out=TOKENS,
            public=True,
            body=obj({"login": S, "password": S, "new_password": S}, ("login", "password")),
            errors=(401, 403, 422) + RATE,
        )
    },
    "/api/auth/refresh": {
        "POST": op(
            "Exchange a refresh token for a new pair",
            A,
            out=TOKENS,
            public=True,
            body=obj({"refresh_token": S}, ("refresh_token",)),
            errors=(401,) + RATE,
        )
    },
    "/api/auth/logout": {"POST": op("Revoke every credential of the caller", A)},
    # ---------------------------------------------------------------- profile and users
    "/api/profile": {"GET": op("The caller's profile", U)},
    "/api/profile/regenerate-api-key": {
        "POST": op("A new API key (shown once)", U, out=obj({"api_key": S}, ("api_key",)))
    },
    "/api/profile/reset-password": {
        "POST": op(
            "Change the caller's password",
            U,
            out=TOKENS,
            body=obj({"current_password": S, "new_password": S}, ("current_password",)),
            errors=(422,) + RATE,
        )
    },
    "/api/profile/upload-avatar": {
        "POST": op(
            "Upload an avatar image",
            U,
            out=obj({"avatar_url": S}, ("avatar_url",)),
            multipart=obj({"avatar": {"type": "string", "format": "binary"}}, ("avatar",)),
            errors=(422,),
        )
    },
    "/api/users": {
        "GET": op(
            "Users (admin)",
            U,
            out=obj({"users": arr(), "total": I}, ("users", "total")),
            params=[q("q"), *PAGE],
        ),
        "POST": op(
            "Create a user (admin)",
            U,
            ok=201,
            out=obj({"user": OBJ, "password": S}, ("user",)),
            body=obj({"email": S, "username": S, "role": S, "password": S}, ("email", "username")),
            errors=(409, 422),
        ),
    },
    "/api/users/<int:user_id>/active": {
        "POST": op(
            "Activate or deactivate a user (admin)",
            U,
            body=obj({"active": B}, ("active",)),
            errors=(409,),
        )
    },
    "/api/users/<int:user_id>/role": {
        "POST": op(
            "Set a user's global role (admin)",
            U,
            body=obj({"role": {"type": "string", "enum": ["admin", "user"]}}, ("role",)),
            errors=(409,),
        )
    },
    "/api/users/<int:user_id>/reset-password": {
        "POST": op(
            "Reset a user's password (admin)",
            U,
            out=obj({"user": OBJ, "password": S}, ("user",)),
            body=obj({"password": S}),
            errors=(409, 422),
        )
    },
    "/api/users/invites": {
        "GET": op("Invites (admin)", U, out=obj({"invites": arr(), "total": I}, ("invites",))),
        "POST": op(
            "Create an invite link (admin)",
            U,
            ok=201,
            out=obj({"invite": OBJ, "invite_url": S, "expires_at": S}, ("invite", "invite_url")),
            body=obj({"email": S, "role": S, "expires_in": I}),
            errors=(409, 422),
        ),
    },
    "/api/users/invites/<int:invite_id>": {
        "DELETE": op("Revoke a pending invite (admin)", U, out=obj({"invite": OBJ}), errors=(409,))
    },
    # ---------------------------------------------------------------- second factor (MFA)
    "/api/profile/mfa": {"GET": op("The caller's second factors", U)},
    "/api/profile/mfa/totp": {
        "POST": op("Start enrolling an authenticator app", U, ok=201, errors=(409,)),
        "DELETE": op(
            "Remove the authenticator app (password again, or a `reauth` passkey assertion)",
            U,
            body=REAUTH,
            errors=(400,) + RATE,
        ),
    },
    "/api/profile/mfa/totp/confirm": {
        "POST": op(
            "Confirm the app with a code; answers the recovery codes once",
            U,
            body=obj({"code": S}, ("code",)),
            errors=(400, 409) + RATE,
        )
    },
    "/api/profile/mfa/recovery-codes": {
        "POST": op(
            "New recovery codes (the old ones die; password or a `reauth` passkey assertion)",
            U,
            body=REAUTH,
            errors=(400, 409) + RATE,
        )
    },
    "/api/users/<int:user_id>/mfa/reset": {
        "POST": op("Admin: remove every factor of a user", U, errors=(403, 404))
    },
    "/api/admin/mfa-required": {
        "POST": op(
            "Admin: require a second factor for everyone",
            U,
            body=obj({"required": B}, ("required",)),
            errors=(403,),
        )
    },
    # ---------------------------------------------------------------- passkeys (WebAuthn)
    "/api/profile/mfa/passkeys": {
        "GET": op("The caller's passkeys", U, out=obj({"passkeys": arr(PASSKEY)}, ("passkeys",))),
        "POST": op(
            "Register a passkey: the browser's answer to the options",
            U,
            ok=201,
            out=obj({"passkey": PASSKEY}, ("passkey",)),
            body=obj({"credential": OBJ, "name": S}, ("credential",)),
            errors=(401, 409),
            description="`credential` is the RegistrationResponseJSON of "
            "`navigator.credentials.create()` (as @simplewebauthn/browser returns it). The "
            "challenge of the options works once and for PORTAL_WEBAUTHN_TIMEOUT seconds.",
        ),
    },
    "/api/profile/mfa/passkeys/options": {
        "POST": op(
            "Start registering a passkey (PublicKeyCredentialCreationOptionsJSON)",
            U,
            out=WEBAUTHN_OPTIONS,
            errors=(401, 409),
            description="Adding a factor to an account that has one needs a step-up "
            "(401 `step_up_required`).",
        )
    },
    "/api/profile/mfa/passkeys/<int:passkey_id>": {
        "PATCH": op(
            "Rename a passkey",
            U,
            out=obj({"passkey": PASSKEY}, ("passkey",)),
            body=obj({"name": S}, ("name",)),
            errors=(404,),
        ),
        "DELETE": op(
            "Remove a passkey (the password again, or a `reauth` passkey assertion)",
            U,
            body=REAUTH,
            errors=(404,) + RATE,
        ),
    },
    "/api/auth/passkey/options": {
        "POST": op(
            "Start a passkey check (PublicKeyCredentialRequestOptionsJSON)",
            A,
            out=WEBAUTHN_OPTIONS,
            public=True,
            body=obj(
                {"purpose": {"type": "string", "enum": ["login", "mfa", "step-up", "reauth"]}}
            ),
            errors=(401, 409) + RATE,
            description="`login`: passwordless sign-in with a discoverable passkey (anyone); "
            "`mfa`: the second step of this browser's password sign-in; `step-up` / `reauth`: "
            "the caller's own passkeys (send the answer as `passkey` with the request it "
            "guards). The challenge is kept server-side, bound to this session, and works "
            "once.",
        )
    },
    "/api/auth/passkey": {
        "POST": op(
            "Finish a passkey sign-in (`login` or `mfa`)",
            A,
            out=obj({"user": OBJ, "redirect": S, "token": S, "refresh_token": S}),
            public=True,
            body=obj(
                {
                    "purpose": {"type": "string", "enum": ["login", "mfa"]},
                    "credential": OBJ,
                    "tokens": B,
                    "next": S,
                },
                ("credential",),
            ),
            errors=(401, 403) + RATE,
            description="Signs this browser session in. `tokens: true` also answers a JWT "
            "pair whose access token carries `mfa_at`. Refused (401 `passkey_refused`): "
            "another origin or RP id, a reused or expired challenge, a sign count that did "
            "not move forward, an unknown passkey.",
        )
    },
}
