from django.dispatch import Signal

# Sent while a run trains: sender=Run, run_id, fraction (0..1), message. The CLI draws its bar from it.
run_progress = Signal()
