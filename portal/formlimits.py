"""The longest value each form field may hold, taken from the constants the services check.
Templates read them as `maxlen.<field>` (a context processor, portal.web), so a page's
maxlength never drifts from the server's limit; tests/test_form_limits.py walks the pages
and checks every text field against this table."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache


@cache
def limits() -> dict[str, int]:
    from portal.accounts import factors, passwords, users
    from portal.audit import services as audit
    from portal.audit import webhook
    from portal.community import issues, search
    from portal.machines import commands, inventory, logs, naming, targets
    from portal.ssh import keys
    from portal.validation import TAGS_TEXT_MAX

    return {
        # machines
        "machine_name": naming.NAME_MAX,
        "host": targets.HOST_MAX,
        "ssh_user": targets.SSH_USER_MAX,
        "tags": TAGS_TEXT_MAX,
        "private_key": keys.KEY_TEXT_MAX,
        "ssh_secret": inventory.SECRET_MAX,  # an SSH password or key passphrase
        "host_key": keys.HOST_KEY_LINE_MAX,
        "command": commands.MAX_COMMAND,
        "machine_search": inventory.SEARCH_MAX,
        "log_search": logs.SEARCH_MAX,
        "log_user": logs.USER_FILTER_MAX,
        "user_ref": users.LOGIN_MAX,  # a user named by email or username
        # accounts
        "email": users.EMAIL_MAX,
        "username": users.USERNAME_MAX,
        "new_password": passwords.PASSWORD_MAX,
        "current_password": users.CURRENT_PASSWORD_MAX,
        "login": users.LOGIN_MAX,
        "mfa_code": factors.CODE_MAX,
        "user_search": users.USER_SEARCH_MAX,
        # community
        "issue_title": issues.TITLE_MAX,
        "issue_body": issues.BODY_MAX,
        "issue_search": search.SEARCH_MAX,
        # audit
        "audit_actor": audit.ACTOR_MAX,
        "audit_action": audit.ACTION_MAX,
        "audit_search": audit.SEARCH_MAX,
        "audit_machine": len(str(audit.MACHINE_FILTER_MAX)),
        "time": logs.TIME_MAX,
        "webhook_url": webhook.URL_MAX,
        "webhook_secret": webhook.SECRET_MAX,
    }


class FormLimits(Mapping):
    """`limits()` as a read-only mapping that loads on first use (the template global)."""

    def __getitem__(self, key: str) -> int:
        return limits()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(limits())

    def __len__(self) -> int:
        return len(limits())
