"""Password hashing: argon2id with the library's recommended parameters, cheap only in tests."""

from __future__ import annotations

import pytest
from argon2 import extract_parameters, profiles

from tests.conftest import PASSWORD


def test_production_hashes_with_the_recommended_parameters(app):
    from portal.accounts import passwords

    with app.app_context():
        app.config["TESTING"] = False  # a deployment: the test profile key is ignored
        try:
            h = passwords.hasher()
            params = extract_parameters(h.hash("correct horse battery"))
        finally:
            app.config["TESTING"] = True
    assert h is passwords.ph
    assert params == profiles.RFC_9106_LOW_MEMORY


def test_the_suite_hashes_with_the_cheapest_parameters(app, make_user):
    from portal.accounts import users
    from portal.accounts.models import User
    from portal.errors import AuthenticationRequired
    from portal.extensions import db

    user = make_user("cheap")
    with app.app_context():
        assert extract_parameters(db.session.get(User, user.id).password_hash) == profiles.CHEAPEST
        assert users.authenticate("cheap", PASSWORD).id == user.id
        with pytest.raises(AuthenticationRequired):
            users.authenticate("cheap", PASSWORD + "x")
        with pytest.raises(AuthenticationRequired):
            users.authenticate("nobody-here", PASSWORD)
        db.session.rollback()
