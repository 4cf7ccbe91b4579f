"""trainctl's training core: specs, data, models, the shared loop, checkpoints and DDP.

`core` never imports the service packages (api, worker, store) nor FastAPI, Celery or SQLAlchemy.
"""
