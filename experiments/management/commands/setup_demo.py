"""manage.py setup_demo: the admin user and a trained demo run, so a fresh `make run` has something to show."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token

from experiments import services
from experiments.models import Run

DEMO_EXPERIMENT = "demo-churn"


class Command(BaseCommand):
    help = "Create the demo admin user (if missing) and train the demo model (if no demo run finished yet)."

    def handle(self, *args, **options):
        users = get_user_model()
        username, password = settings.DEMO_ADMIN_USERNAME, settings.DEMO_ADMIN_PASSWORD
        user = users.objects.filter(username=username).first()
        if user is None:
            user = users.objects.create_superuser(username, email="", password=password)
            self.stdout.write(
                f"Created admin user {username!r} with password {password!r} "
                "(set DEMO_ADMIN_PASSWORD to choose another; change it in the admin)."
            )
        else:
            self.stdout.write(f"Admin user {username!r} exists (password unchanged).")
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(f"API token for {username!r}: {token.key}")

        if Run.objects.filter(experiment__name=DEMO_EXPERIMENT, status=Run.Status.FINISHED).exists():
            self.stdout.write("Demo run already trained.")
            return
        self.stdout.write("Training the demo model (random forest on 2,000 synthetic customers)...")
        run = services.run_launch(
            experiment=DEMO_EXPERIMENT,
            dataset="customer_churn",
            n_samples=2000,
            algorithm="random_forest",
            params={"n_estimators": 100, "max_depth": 8},
            name="demo-random-forest",
            by=user,
            inline=True,
        )
        accuracy = run.latest_metrics.get("accuracy")
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo run #{run.pk} {run.status}" + (f", accuracy {accuracy:.3f}" if accuracy is not None else "")
            )
        )
