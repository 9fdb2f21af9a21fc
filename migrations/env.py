"""Alembic environment: the URL comes from the hub's settings (or the caller's config)."""
from alembic import context
from sqlalchemy import create_engine

from hub.models import Base
from hub.settings import Settings, normalise_database_url

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url
url = normalise_database_url(url)


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                          compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
