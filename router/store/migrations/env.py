"""Alembic's environment for the decision store: the connection comes from DecisionStore (no alembic.ini)."""
from alembic import context

from router.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
