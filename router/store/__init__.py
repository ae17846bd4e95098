"""The decision store: every answered request in a real database, behind one small interface (store.py).
SQLite by default (a file under ~/.cache/ensemble-router/, WAL mode); PostgreSQL for a cluster, where several
ingress replicas write to one store. Used by the serving shell (writes, feedback) and the offline wing (reads)."""
from router.store.store import DEFAULT_URL, URL_ENV, DecisionStore, store_url

__all__ = ["DEFAULT_URL", "URL_ENV", "DecisionStore", "store_url"]
