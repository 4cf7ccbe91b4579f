"""The job store shared by the API and the workers: models, queries, keys, migrations, paths,
and the broker settings (`store.broker`).

Importing it never imports torch, FastAPI or Celery.
"""
