"""Files on a machine over SFTP: browse, download (Range), upload, manage; transfer records."""


def register(app) -> None:
    from portal.files import api, cli, views

    app.register_blueprint(api.bp)
    app.register_blueprint(views.bp)
    cli.init_app(app)
