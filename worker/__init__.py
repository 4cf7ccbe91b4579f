"""The Celery worker: the app (`worker.app`), one thin task (`worker.tasks`), and the runner that
supervises a training process group and reports what it writes (`worker.runner`)."""
