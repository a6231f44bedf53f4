"""Machines: SSH targets, enrollment, pinned host keys, exec, broadcast, command logs, roles."""


def _shquote(value) -> str:
    """POSIX single-quoting for values rendered into the enrollment script."""
    return "'" + str(value).replace("'", "'\\''") + "'"


def register(app) -> None:
    # edit_views and broadcast_views add their routes to views.bp
    from portal.machines import api, broadcast_views, cli, edit_views, views  # noqa: F401

    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    app.add_template_filter(_shquote, "shquote")
    cli.init_app(app)
