"""Community board: issues and fixes in Markdown, likes, accepted answers, image uploads."""


def register(app) -> None:
    from portal.community import uploads  # noqa: F401 - installs the upload file hooks
    from portal.community.api import bp as api_bp
    from portal.community.views import bp as views_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(views_bp)
