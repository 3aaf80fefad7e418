"""manage.py build_fast_forms: the ONNX form for versions registered before ONNX serving existed."""

from django.core.management.base import BaseCommand
from tqdm import tqdm

from core.cli import add_user_argument, user_resolve
from core.errors import ApplicationError
from registry.models import ModelVersion
from registry.services.registration import version_fast_form_rebuild


class Command(BaseCommand):
    help = "Convert the scikit-learn versions that have no ONNX form yet; each is kept only if it matches."

    def add_arguments(self, parser):
        parser.add_argument("--model", help="Only this model's versions.")
        add_user_argument(parser, required=True)

    def handle(self, *args, **options):
        by = user_resolve(options["user"], required=True)
        versions = (
            ModelVersion.objects.select_related("model", "run", "dataset")
            .filter(serving_form=ModelVersion.ServingForm.SKLEARN)
            .exclude(stage=ModelVersion.Stage.ARCHIVED)
        )
        if options["model"]:
            versions = versions.filter(model__name=options["model"])
        failed = 0
        for version in tqdm(list(versions), file=self.stderr._out, disable=not versions):
            try:
                rebuilt = version_fast_form_rebuild(version=version, by=by)
            except ApplicationError as exc:
                failed += 1
                self.stderr.write(f"{version}: {exc}")
            else:
                self.stdout.write(f"{rebuilt}: {rebuilt.get_serving_form_display()} — {rebuilt.serving_note}")
        if failed:
            raise SystemExit(1)
