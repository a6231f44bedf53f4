"""Files on a machine over SFTP: browse, download (Range), upload, manage; transfer records."""


def register(app) -> None:
    from portal.files import api, cli

    app.register_blueprint(api.bp)
    cli.init_app(app)
