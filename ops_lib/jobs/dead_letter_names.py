"""The names `manage_dead_letters.py` offers, without the job: its `--help` loads no SQLAlchemy."""

ACTIONS = ("list", "retry", "forget", "prune")
QUEUE_NAMES = ("scans", "deliveries", "emails", "dbjobs")  # the keys of dead_letters.QUEUES, in order
QUEUE_CHOICES = (*QUEUE_NAMES, "all")
SAMPLE = 20  # rows shown per queue
