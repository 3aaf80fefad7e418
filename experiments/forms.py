"""Admin forms: they collect input and hand it to the services, which validate it."""

from django import forms

from core.errors import InvalidInput
from experiments.datasets import BUILTIN_DATASETS, CUSTOMER_CHURN_MAX_SAMPLES
from experiments.models import DatasetVersion
from experiments.trainers import RECORDED_METRICS, TRAINERS


def _dataset_choices():
    uploaded = DatasetVersion.objects.exclude(source=DatasetVersion.Source.BUILTIN).values_list("name", flat=True)
    return [
        ("Built-in", [(name, name) for name in BUILTIN_DATASETS]),
        ("Uploaded", [(name, name) for name in sorted(set(uploaded))]),
    ]


class LaunchRunForm(forms.Form):
    experiment = forms.CharField(max_length=200, help_text="Created if it does not exist yet.")
    dataset = forms.ChoiceField(choices=())
    n_samples = forms.IntegerField(
        required=False,
        min_value=10,
        max_value=CUSTOMER_CHURN_MAX_SAMPLES,
        help_text="customer_churn only: how many customers to make (default 2000).",
    )
    seed = forms.IntegerField(required=False, min_value=0, help_text="customer_churn only (default 42).")
    algorithm = forms.ChoiceField(choices=[(name, name) for name in TRAINERS])
    params = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 40}),
        help_text="One NAME=VALUE per line; unset params take their defaults.",
    )
    sweep = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text='Optional grid, e.g. "n_estimators=50,100;max_depth=3,5": one run per combination.',
    )
    sweep_metric = forms.ChoiceField(choices=[(m, m) for m in RECORDED_METRICS], initial="accuracy")
    name = forms.CharField(required=False, max_length=200)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].choices = _dataset_choices()

    def clean_params(self):
        params = {}
        for number, line in enumerate(self.cleaned_data["params"].splitlines(), start=1):
            if not line.strip():
                continue
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise forms.ValidationError(f"line {number}: {line.strip()!r} is not NAME=VALUE")
            params[key.strip()] = value.strip()
        return params

    def add_service_error(self, exc: InvalidInput):
        """Show a service's error on the form field it names."""
        root = (exc.field or "").split(".")[0]
        self.add_error(root if root in self.fields else None, str(exc))


class DatasetUploadForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="Uploads with the same name are versions of one dataset.")
    target = forms.CharField(max_length=200, help_text="The column holding the class labels.")
    file = forms.FileField(help_text="A UTF-8 CSV with a header row.")

    def add_service_error(self, exc: InvalidInput):
        self.add_error(exc.field if exc.field in self.fields else None, exc.message)
