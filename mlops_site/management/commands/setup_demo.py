"""manage.py setup_demo: users for each role, policies, and a demo model trained, registered and promoted
through the same request → approve path a team uses, so a fresh `make run` has something to show."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token

from experiments import services
from experiments.models import Run
from governance.models import Policy
from governance.services import policy_save
from registry import selectors as registry_selectors
from registry import services as registry_services
from registry.models import RegisteredModel
from serving.crm import services as crm_services

DEMO_EXPERIMENT = "demo-churn"
DEMO_MODEL = "churn"
# One demo user per role, all with the demo admin's password.
DEMO_USERS = {
    "scientist": "Data scientist",
    "approver": "Approver",
    "auditor": "Auditor",
    "engineer": "ML engineer",
    "app": "Application",
}
DEMO_POLICIES = [
    {"name": "Accuracy and latency", "kind": "performance", "min_metrics": {"accuracy": 0.7}, "max_latency_ms": 200},
    {"name": "Enough clean data", "kind": "data_quality", "min_rows": 500, "max_null_percent": 5},
    {"name": "Documented", "kind": "documentation", "required_fields": ["description", "owner", "intended_use"]},
]


class Command(BaseCommand):
    help = "Create the demo admin user (if missing) and train the demo model (if no demo run finished yet)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--allow-demo-accounts",
            action="store_true",
            help="Create the demo accounts even with DEBUG off (they share one published password).",
        )
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000", help="where the site will answer, for the printed curl line"
        )

    def handle(self, *args, **options):
        if not settings.DEBUG and not options["allow_demo_accounts"]:
            raise CommandError(
                "DEBUG is off: setup_demo would create staff accounts sharing the demo password "
                f"({', '.join([settings.DEMO_ADMIN_USERNAME, *DEMO_USERS])}). Create real users with "
                "`manage.py createsuperuser`, or pass --allow-demo-accounts if this is a demo."
            )
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

        roles = self._users(password)
        self._policies(user)
        run = Run.objects.filter(experiment__name=DEMO_EXPERIMENT, status=Run.Status.FINISHED).first()
        if run is None:
            run = self._train(user)
        self._register_and_promote(run, roles)
        self._crm_customers(user, url=options["url"].rstrip("/"))

    def _users(self, password):
        users = get_user_model()
        made = {}
        for username, role in DEMO_USERS.items():
            member = users.objects.filter(username=username).first()
            if member is None:
                # The application account calls the API only; people use the admin too.
                member = users.objects.create_user(username, password=password, is_staff=role != "Application")
                member.groups.add(Group.objects.get(name=role))
                self.stdout.write(f"Created {role.lower()} {username!r} (same password as the admin).")
            made[username] = member
            token, _ = Token.objects.get_or_create(user=member)
            self.stdout.write(f"API token for {username!r} ({role}): {token.key}")
        return made

    def _policies(self, admin_user):
        for spec in DEMO_POLICIES:
            if not Policy.objects.filter(name=spec["name"]).exists():
                policy_save(policy=Policy(**spec), by=admin_user)

    def _register_and_promote(self, run, roles):
        if run.status != Run.Status.FINISHED or RegisteredModel.objects.filter(name=DEMO_MODEL).exists():
            return
        scientist, approver = roles["scientist"], roles["approver"]
        version = registry_services.model_version_register(
            run_id=run.pk, model_name=DEMO_MODEL, description="Demo churn classifier", by=scientist
        )
        registry_services.registered_model_update(
            model=version.model,
            by=scientist,
            changes={
                "description": "Will a customer leave in the next 90 days?",
                "intended_use": "Demo: ranks customers for retention offers. Not for pricing or credit decisions.",
            },
        )
        request = registry_services.promotion_request_create(
            version=version, to_stage="production", reason="Demo model for a fresh install", by=scientist
        )
        registry_services.promotion_request_approve(request_id=request.pk, by=approver, comment="demo")
        production = registry_selectors.production_version_get(model_name=DEMO_MODEL)
        self.stdout.write(
            self.style.SUCCESS(f"Registered and promoted {production} (requested by scientist, approved by approver).")
        )

    def _crm_customers(self, admin_user, *, url):
        if settings.CRM_URL:
            self.stdout.write(f"CRM: the external CRM at {settings.CRM_URL} holds the customers.")
            return
        made = crm_services.customers_seed(count=settings.CRM_DEMO_CUSTOMERS, by=admin_user)
        if made:
            self.stdout.write(self.style.SUCCESS(f"Seeded the embedded CRM with {made:,} synthetic customers."))
        token = Token.objects.get(user=admin_user).key
        self.stdout.write(
            "Update a customer's segment: curl -X POST -H 'Authorization: Token "
            f"{token}' '{url}/crm_segment_update?customer_id=CUST_TEST_007'"
        )

    def _train(self, user):
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
        return run
