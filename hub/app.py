"""The Flask app factory: a flat list of init_app lines, importable without side effects."""
from __future__ import annotations

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import RequestEntityTooLarge

from hub import defaults, logs
from hub.directory import Directory
from hub.runtime import Runtime
from hub.settings import Settings


def create_app(config: dict | None = None, runtime: Runtime | None = None) -> Flask:
    """`config` overrides environment variables by name; tests may pass their own runtime."""
    app = Flask(__name__, instance_relative_config=False)
    runtime = runtime or Runtime(Settings.from_env(config))
    settings = runtime.settings
    app.config.update(SECRET_KEY=settings.secret_key, MAX_CONTENT_LENGTH=defaults.MAX_BODY_BYTES,
                      # the OAuth callback is a top-level GET from the vendor: Lax still sends the cookie
                      SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=(settings.public_url or "").startswith("https://"))
    app.session_interface = NoWebhookSessions()
    app.extensions["hub"] = runtime
    app.extensions["hub_directory"] = Directory(runtime)
    logs.init_app(app)
    _register_blueprints(app)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    return app


class NoWebhookSessions(SecureCookieSessionInterface):
    """Vendors' webhook deliveries carry no browser session: skip the cookie signer on them (it costs a
    serializer per request); other pages keep Flask's signed-cookie sessions."""

    def open_session(self, app, request):
        if request.path.startswith("/webhooks/"):
            return None                  # Flask falls back to a null session
        return super().open_session(app, request)


def _register_blueprints(app: Flask) -> None:
    from hub import api, oauth, ops
    from webhooks import routes

    app.register_blueprint(ops.bp)
    app.register_blueprint(routes.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(oauth.bp)


def _too_large(_exc):
    from webhooks.responses import error

    return error(413, "body_too_large", f"bodies are limited to {defaults.MAX_BODY_BYTES} bytes")
