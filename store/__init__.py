"""The job store shared by the API and the workers: models, queries, keys, migrations, paths.

Importing it never imports torch, FastAPI or Celery.
"""
