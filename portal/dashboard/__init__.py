"""The home page after sign-in: counts, recent machines, recent activity, commands per day."""

from portal import signals


def register(app) -> None:
    from portal.dashboard.api import bp as api_bp
    from portal.dashboard.views import bp

    app.register_blueprint(bp)
    app.register_blueprint(api_bp)
    # The chart's per-day cache must not outlive the app (tests build a new app per test).
    signals.app_shutdown.connect(_clear_cache, sender=app, weak=False)


def _clear_cache(app, **_):
    from portal.dashboard import services

    services.clear_cache()
