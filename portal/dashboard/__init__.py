"""The home page after sign-in: counts, recent machines, recent activity, commands per day."""


def register(app) -> None:
    from portal.dashboard import services
    from portal.dashboard.api import bp as api_bp
    from portal.dashboard.views import bp

    app.register_blueprint(bp)
    app.register_blueprint(api_bp)
    # The chart's per-day cache must not outlive the app (tests build a new app per test).
    app.extensions.setdefault("portal_shutdown", []).append(services.clear_cache)
